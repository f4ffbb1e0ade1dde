"""OpenAPI schema generation (drf-spectacular) tuned to the house style.

The schema is a contract (tests/test_api_fuzz.py holds the server to it): every operation
lists each error status it can answer, with the one JSON error body (common/errors.py), and
the bounds the server enforces. The statuses follow from what the view is made of (its
authentication, permissions, throttles, parsers and parameters), so a new view gets them
without a decorator; views add their own (409, 422, ...) with ``extend_schema``.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAdminUser

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "The body of every API error (common/errors.py).",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. invalid, rate_limited."},
                "message": {"type": "string", "description": "For a person: names the problem."},
                "fields": {"type": "object", "description": "Per-field messages, when fields are at fault."},
                "retry_after": {"type": "integer", "description": "Seconds to wait (also the Retry-After header)."},
            },
        }
    },
}
STATUS_DESCRIPTIONS = {
    400: "Malformed or invalid input (invalid, naming the field; parse_error).",
    401: "Missing or wrong credentials.",
    403: "Authenticated but not allowed (staff only; CSRF on a session without its token).",
    404: "No such object (or not yours).",
    409: "Conflicts with what is stored.",
    413: "The body is too large.",
    415: "Unsupported content type or file.",
    422: "Contradicts an earlier request.",
    429: "A rate limit or quota is used up (with Retry-After).",
    503: "A server the platform needs is unavailable; retry after Retry-After.",
}
# Bounds the server enforces that its serializers do not state: (path, method, where, name) -> schema.
BOUNDS: dict[tuple[str, str, str, str], dict[str, Any]] = {
    ("/api/v1/projects/{slug}/leaderboards/{period}/", "get", "query", "limit"): {"minimum": 1, "maximum": 500},
    ("/api/v1/me/", "patch", "body", "display_name"): {"minLength": 3, "maxLength": 40},
    # submissions.filters: an empty value is refused (StrictFilterSet), an id is an IdFilter.
    # (a NUL character is refused: no database can hold it)
    **{(path, "get", "query", name): {"minLength": 1, "pattern": r"^[^\x00]+$"}
       for path in ("/api/v1/photos/", "/api/v1/moderation/photos/") for name in ("label", "project")},
    ("/api/v1/photos/", "get", "query", "challenge"): {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    ("/api/v1/moderation/photos/", "get", "query", "challenge"): {
        "type": "integer", "minimum": 1, "maximum": 2**31 - 1,
    },
    # verification: the project's slug is required and never empty.
    **{(path, "get", "query", "project"): {"minLength": 1, "pattern": r"^[^\x00]+$"}
       for path in ("/api/v1/verification/next/", "/api/v1/verification/pairs/")},
    ("/api/v1/photos/", "post", "header", "Idempotency-Key"): {
        "minLength": 1, "maxLength": 100, "pattern": r"^[\x20-\x7e]+$",
    },
}
# OpenAPI links: what a client does next with an answer (stateful tests follow them).
LINKS: dict[tuple[str, str, str], dict[str, dict]] = {
    ("/api/v1/photos/", "post", "201"): {
        "GetPhoto": {"operationId": "v1_photos_retrieve", "parameters": {"photo_id": "$response.body#/id"}},
        "DeletePhoto": {"operationId": "v1_photos_destroy", "parameters": {"photo_id": "$response.body#/id"}},
    },
}
_UNSAFE = {"post", "put", "patch", "delete"}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """An OpenAPI response object for an error status, with the JSON error body."""
    return {
        "description": description or STATUS_DESCRIPTIONS.get(status, "Error."),
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}},
    }


class AutoSchema(SpectacularAutoSchema):
    """Names nested `Input`/`Output` serializers after their view (SignupApiInput, ...), and
    lists every error status an operation can answer.

    Views declare their serializers inside the view class; without this every one of them
    would be a component called "Input" and the schema would silently merge them.
    """

    def get_serializer_name(self, serializer, direction):
        qualname = type(serializer).__qualname__
        if "." in qualname:
            return qualname.replace(".", "")
        return super().get_serializer_name(serializer, direction)

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for status in sorted(self._error_statuses(operation)):
            responses.setdefault(str(status), {"description": STATUS_DESCRIPTIONS[status]})
        for status, response in responses.items():
            if status[0] in "45" and "content" not in response:
                response["content"] = error_response(int(status))["content"]
        return operation

    def _error_statuses(self, operation: dict) -> set[int]:
        """What this view can answer besides success, from what it is made of."""
        view, method = self.view, self.method.lower()
        # The exception handler answers a lost database with 503 everywhere.
        statuses = {503}
        parameters = operation.get("parameters", [])
        # A path names an object that may not exist; a page past the last one is a 404 too (DRF).
        if any(p["in"] == "path" or (p["in"], p["name"]) == ("query", "page") for p in parameters):
            statuses.add(404)
        if any(p["in"] == "query" for p in parameters):
            statuses.add(400)
        if "requestBody" in operation:
            statuses |= {400, 413, 415}
        if view.get_authenticators():
            statuses.add(401)  # a wrong token is refused even where no login is needed
            if method in _UNSAFE and any(isinstance(a, SessionAuthentication) for a in view.get_authenticators()):
                statuses.add(403)
        if any(isinstance(p, IsAdminUser) for p in view.get_permissions()):
            statuses.add(403)
        if view.get_throttles():
            statuses.add(429)
        return statuses


def postprocess(result: dict, generator, request, public) -> dict:
    """SPECTACULAR_SETTINGS hook: the error body component, the bounds in BOUNDS, the LINKS."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    for (path, method, where, name), bounds in BOUNDS.items():
        operation = result["paths"].get(path, {}).get(method)
        if operation is None:
            continue
        if where == "body":
            for media in operation.get("requestBody", {}).get("content", {}).values():
                target = _resolve(result, media["schema"])["properties"][name]
                target.update(bounds)
        else:
            for parameter in operation.get("parameters", []):
                if parameter["in"] == where and parameter["name"] == name:
                    parameter["schema"].update(bounds)
    for (path, method, status), links in LINKS.items():
        operation = result["paths"].get(path, {}).get(method)
        if operation is not None:
            operation["responses"][status]["links"] = links
    return result


def _resolve(result: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    if not ref:
        return schema
    return result["components"]["schemas"][ref.rsplit("/", 1)[1]]
