"""The app-facing API (/api/mobile/v1/): update checks, manifests and model cards.

Versioned in the URL and only ever extended: apps in the field keep working. The update
check is a plain Django view (no DRF): every installed app polls it, and DRF's request
machinery would cost about a quarter of its throughput.
"""
from __future__ import annotations

import hashlib
import json
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from common.errors import DomainError, NotFound, error_body
from mobile_api import auth, rollout, update
from mobile_api.selectors import legacy_latest_version
from training.models import ModelVersion
from training.selectors import model_version_get

# Re-exported for code that built manifests from here before channels existed.
RUNTIMES = update.RUNTIMES
ARTIFACT_METRICS = update.ARTIFACT_METRICS
_MAX_QUERY = 2048  # no honest poll sends more; longer query strings are refused unparsed


def model_manifest(*, version: ModelVersion, request: HttpRequest) -> dict:
    """Everything an app needs to download, verify and feed one model version (``/latest``).

    ``artifacts`` lists every offered file (the float model and its compressed alternatives),
    per format the recommended one first. The top-level ``format``, ``sha256``, ``size``,
    ``download_url`` and ``input`` describe the recommended ONNX file, so the simplest client
    (and every app released before compression) keeps working unchanged.
    """
    body = update.version_manifest(version=version, absolute=request.build_absolute_uri)
    artifacts = body["artifacts"]
    primary = (
        next((a for a in artifacts if a["recommended"] and a["format"] == "onnx"), None)
        or next((a for a in artifacts if a["recommended"]), None)
        or artifacts[0]
    )
    return {
        "model": version.project.slug,
        **body,
        # The recommended file, repeated at the top level for the simplest clients.
        "format": primary["format"],
        "sha256": primary["sha256"],
        "size": primary["size"],
        "download_url": primary["download_url"],
    }


# --- the update check ---------------------------------------------------------------------

class InvalidParameter(DomainError):
    code = "invalid_parameter"


class MethodNotAllowed(DomainError):
    status_code = 405
    code = "method_not_allowed"


def _error_response(exc: DomainError) -> HttpResponse:
    extra = dict(exc.extra)
    if exc.retry_after is not None:
        extra.setdefault("retry_after", exc.retry_after)
    response = HttpResponse(
        json.dumps(error_body(exc.code, exc.message, **extra)), status=exc.status_code,
        content_type="application/json",
    )
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


_PARAMETERS = frozenset({"install_id", "app_version", "platform", "formats", "current_version", "channel"})


def update_query_split(query_string: str) -> tuple[dict[str, str], dict[str, str]]:
    """The update check's parameters from a raw query string: (values, fields given twice).

    A few times cheaper than Django's QueryDict, which matters on the most frequent request
    of the platform. Unknown parameters are ignored (apps may send more in later versions).
    """
    values: dict[str, str] = {}
    repeated: dict[str, str] = {}
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if name not in _PARAMETERS:
            continue
        if name in values:
            repeated[name] = "given more than once"
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        values[name] = value
    return values, repeated


def update_install_parse(query_string: str) -> tuple[rollout.Install, str]:
    """The install and the channel an update check names; InvalidParameter naming each bad field."""
    values, fields = update_query_split(query_string)
    install_id = values.get("install_id", "")
    if not rollout.INSTALL_ID.match(install_id):
        fields.setdefault("install_id", "8 to 128 characters of A-Z a-z 0-9 _ -")
    app_version = values.get("app_version", "")
    if not rollout.APP_VERSION.match(app_version):
        fields.setdefault("app_version", "a dotted version of 1 to 4 numbers, e.g. 2.13.0")
    platform = values.get("platform", "")
    if platform not in update.PLATFORMS:
        fields.setdefault("platform", f"one of {', '.join(update.PLATFORMS)}")
    formats = tuple(dict.fromkeys(f for f in values.get("formats", "").split(",") if f))
    if not formats or any(f not in update.FORMATS for f in formats):
        fields.setdefault("formats", f"a comma-separated list of {', '.join(update.FORMATS)}")
    current_raw = values.get("current_version", "")
    current_version = None
    if current_raw:
        if current_raw.isascii() and current_raw.isdigit() and len(current_raw) <= 9 and int(current_raw) > 0:
            current_version = int(current_raw)
        else:
            fields.setdefault("current_version", "a positive integer")
    channel = values.get("channel") or "stable"
    if not rollout.NAME.match(channel):
        fields.setdefault("channel", "a channel name (letters, digits, - and _)")
    if fields:
        first = next(iter(fields))
        raise InvalidParameter(f"{first}: {fields[first]}", extra={"fields": fields})
    return rollout.Install(install_id, app_version, platform, formats, current_version), channel


# Exempt from CSRF: apps authenticate with X-App-Key, never a cookie, and the view only
# reads. Without it, a POST got Django's HTML CSRF page (403) instead of PROTOCOL.md's 405.
@csrf_exempt
def model_update(request: HttpRequest, name: str) -> HttpResponse:
    """``GET models/<name>/update``: the manifest this install should run, or 304 (PROTOCOL.md).

    No database query once the channel's document is cached: the app key, the rate limit
    counter and the document all come from memory or Django's cache.
    """
    if request.method != "GET":
        response = _error_response(
            MethodNotAllowed(f"Method {request.method!r} is not allowed; the update check is a GET.")
        )
        response["Allow"] = "GET"
        return response
    try:
        identity = auth.app_identity_from_request(request)
        query_string = request.META.get("QUERY_STRING", "")
        if len(query_string) > _MAX_QUERY:
            raise InvalidParameter("The query string is too long.", extra={"fields": {"query": "too long"}})
        install, channel = update_install_parse(query_string)
        auth.rate_limit_check(identity, install_id=install.install_id, scope="update", shared=False)
        if len(name) > 50:  # longer than any model name: not worth a cache key or a query
            raise NotFound(f"No model named {name[:50]!r}...", code="model_not_found")
        document = update.channel_document_get(model=name, channel=channel)
        if document == update.MODEL_NOT_FOUND:
            raise NotFound(f"No model named {name!r}.", code="model_not_found")
        if document == update.CHANNEL_NOT_FOUND:
            raise NotFound(f"The model {name!r} has no channel {channel!r}.", code="channel_not_found")
        answer = update.update_answer(document=document, install=install)
    except DomainError as exc:
        return _error_response(exc)
    if answer.etag in _etags(request.META.get("HTTP_IF_NONE_MATCH", "")):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(answer.body(), content_type="application/json")
    response["ETag"] = answer.etag
    # Private: the answer depends on the install. no-cache: revalidate each poll (a cheap 304).
    response["Cache-Control"] = "private, no-cache"
    return response


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compared as strong)."""
    return {tag.strip().removeprefix("W/") for tag in header[:1024].split(",") if tag.strip()}


# --- legacy and model cards ------------------------------------------------------------------

class ManifestOutput(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    labels = serializers.ListField(child=serializers.CharField())
    input = serializers.DictField()
    metrics = serializers.DictField()
    format = serializers.CharField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    download_url = serializers.URLField()
    artifacts = serializers.ListField(child=serializers.DictField())


class ModelLatestApi(APIView):
    """The manifest for apps built before channels; 304 when the app's ETag still matches.

    With channels: the stable channel's release that is out to everyone (a staged rollout
    never reaches these apps before it is complete); without: the newest version.
    """

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: ManifestOutput, 304: None})
    def get(self, request: Request, name: str) -> HttpResponse:
        has_channels, version = legacy_latest_version(project_slug=name)
        if version is None and has_channels:
            raise NotFound(f"No release of {name!r} is rolled out to every install.", code="no_release")
        if version is None:
            raise NotFound(f"No published model named {name!r}.", code="model_not_found")
        body = json.dumps(model_manifest(version=version, request=request), sort_keys=True).encode()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if request.headers.get("If-None-Match") == etag:
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(body, content_type="application/json")
        response["ETag"] = etag
        # Apps revalidate every poll; the ETag makes a poll with no news a tiny 304.
        response["Cache-Control"] = "no-cache"
        return response


class ModelCardApi(APIView):
    """The model card of a version: every file that was built and measured, offered or not, and why."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, name: str, version: int) -> HttpResponse:
        found = model_version_get(project_slug=name, version=version)
        if found is None:
            raise NotFound(f"No version {version} of a model named {name!r}.", code="model_version_not_found")
        body = json.dumps(found.model_card or {}, sort_keys=True).encode()
        response = HttpResponse(body, content_type="application/json")
        # A version never changes, nor does its card.
        response["ETag"] = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        return response
