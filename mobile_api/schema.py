"""The app-facing parts of the OpenAPI schema that drf-spectacular cannot see by itself.

The update check is a plain Django view (api.model_update), so its path is written here
(PROTOCOL.md is the prose of the same contract); every app endpoint but the two legacy ones
(``/latest``, ``/versions/<n>/card``) wants the ``X-App-Key`` header and counts the key's
per-minute limit (429).
"""
from __future__ import annotations

from typing import Any

from common.schema import error_response
from mobile_api import rollout, update
from mobile_api.auth import HEADER

APP_KEY_SCHEME = "appKey"
UPDATE_PATH = "/api/mobile/v1/models/{name}/update"
_APP_PREFIX = "/api/mobile/v1/models/"
_LEGACY_OPEN = ("/latest", "/card")
_DOWNLOADS = "/api/mobile/v1/models/{name}/versions/{version}/{variant}"
_SLUG = {"type": "string", "pattern": r"^[-a-zA-Z0-9_]+$", "maxLength": 50}
_ETAG = {"description": "Send it back in If-None-Match.", "required": True, "schema": {"type": "string"}}
_CACHE_CONTROL = {"description": "private, no-cache", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict, description: str, *, required: bool = False) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": required, "schema": schema, "description": description}


def update_operation() -> dict[str, Any]:
    """``GET models/{name}/update`` as OpenAPI (PROTOCOL.md, "Update check")."""
    formats = "|".join(update.FORMATS)
    return {
        "operationId": "mobile_v1_models_update_retrieve",
        "summary": "The manifest this install should run, or 304 when nothing changed (PROTOCOL.md).",
        "tags": ["mobile"],
        "security": [{APP_KEY_SCHEME: []}],
        "parameters": [
            {"in": "path", "name": "name", "required": True, "schema": _SLUG},
            _query("install_id", {"type": "string", "pattern": rollout.INSTALL_ID.pattern}, "Random id of the "
                   "installation, 8 to 128 characters of A-Z a-z 0-9 _ - (ASCII only).", required=True),
            # ASCII digits only: \d would also match other scripts' digits.
            _query("app_version", {"type": "string", "pattern": r"^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$"},
                   "1 to 4 dot-separated numbers of up to 6 ASCII digits.", required=True),
            _query("platform", {"type": "string", "enum": list(update.PLATFORMS)}, "The app's platform.",
                   required=True),
            _query("formats", {"type": "string", "pattern": rf"^({formats})(,({formats}))*$"},
                   "Comma-separated formats the app can load, in order of preference.", required=True),
            _query("current_version", {"type": "integer", "minimum": 1, "maximum": 999_999_999},
                   "The version the install runs (keeps a paused release)."),
            _query("channel", _SLUG, "Default stable."),
            {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
             "description": "The ETag of the last answer: 304 when nothing changed."},
        ],
        "responses": {
            "200": {
                "description": "The manifest (version null: keep what you have).",
                "headers": {"ETag": _ETAG, "Cache-Control": _CACHE_CONTROL},
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["model", "channel", "version"],
                    "properties": {
                        "model": {"type": "string"},
                        "channel": {"type": "string"},
                        "version": {"type": "integer", "nullable": True},
                        "reason": {"type": "string", "nullable": True},
                        "artifacts": {"type": "array", "items": {"type": "object"}},
                        "rollout": {"type": "object"},
                    },
                }}},
            },
            "304": {"description": "Nothing changed for this install.",
                    "headers": {"ETag": _ETAG, "Cache-Control": _CACHE_CONTROL}},
            "400": error_response(400, "invalid_parameter (with fields): a malformed or repeated parameter."),
            "401": error_response(401, "app_key_invalid: key missing, unknown or revoked."),
            "404": error_response(404, "model_not_found, channel_not_found."),
            "429": error_response(429, "rate_limited (with Retry-After)."),
        },
    }


def postprocess(result: dict, generator, request, public) -> dict:
    """SPECTACULAR_SETTINGS hook: the X-App-Key scheme on every app endpoint, and the update check."""
    components = result.setdefault("components", {})
    components.setdefault("securitySchemes", {})[APP_KEY_SCHEME] = {
        "type": "apiKey", "in": "header", "name": HEADER,
        "description": "An app key (Django admin, shown once); see mobile_api/PROTOCOL.md.",
    }
    paths = result["paths"]
    paths[UPDATE_PATH] = {"get": update_operation()}
    for path, item in paths.items():
        if not path.startswith(_APP_PREFIX) or path.endswith(_LEGACY_OPEN):
            continue
        for operation in item.values():
            operation["security"] = [{APP_KEY_SCHEME: []}]
            # The key is the security scheme's header, not a parameter of its own.
            operation["parameters"] = [
                p for p in operation.get("parameters", []) if not (p["in"] == "header" and p["name"] == HEADER)
            ]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", error_response(401, "app_key_invalid: key missing, unknown or revoked."))
            responses.setdefault("429", error_response(429, "rate_limited (with Retry-After)."))
            if path.startswith(_DOWNLOADS):  # common.files.stored_file_response
                responses.setdefault("304", {"description": "If-None-Match matched the file's sha256."})
                responses.setdefault("416", error_response(416, "range_not_satisfiable: a malformed or "
                                                                "unsatisfiable byte range."))
    result["paths"] = dict(sorted(paths.items()))
    return result
