"""Model files and patches for apps: the bytes (byte ranges), or a presigned redirect on S3.

Both routes want a valid ``X-App-Key`` (401) and count against the key's per-minute limit
(429) under the scope "download", per install: the ``X-Install-Id`` header when it is a
well-formed install id, else the client's address. Headers, ranges and redirects are
``common.files.stored_file_response``'s; the ETag is the file's sha256.
"""
from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from common.errors import NotFound
from common.files import stored_file_response
from mobile_api.auth import app_identity_from_request, rate_limit_check
from mobile_api.deltas import artifact_delta_get
from mobile_api.rollout import INSTALL_ID
from training.ml.formats import FORMATS
from training.selectors import model_artifact_get

INSTALL_ID_HEADER = "X-Install-Id"

_HEADERS = [
    OpenApiParameter("X-App-Key", str, OpenApiParameter.HEADER, required=True),
    OpenApiParameter(INSTALL_ID_HEADER, str, OpenApiParameter.HEADER, description="Counts the rate limit per install."),
    OpenApiParameter("Range", str, OpenApiParameter.HEADER, description="bytes=N- resumes a download (206)."),
]
_RESPONSES = {(200, "application/octet-stream"): bytes, (206, "application/octet-stream"): bytes,
              (200, "application/zip"): bytes, 302: None}


class ModelDownloadApi(APIView):
    """The bytes of one file of a version (a presigned redirect when storage is S3)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(parameters=_HEADERS, responses=_RESPONSES)
    def get(self, request: Request, name: str, version: int, variant: str) -> HttpResponse:
        _download_allowed(request)
        fmt, variant_name = _split_variant(variant)
        artifact = model_artifact_get(project_slug=name, version=version, format=fmt, variant=variant_name)
        if artifact is None:
            raise NotFound(f"No file {variant!r} in version {version} of {name!r}.", code="artifact_not_found")
        spec = FORMATS.get(fmt)
        return stored_file_response(
            request,
            name=artifact.file.name,
            etag=artifact.sha256,
            content_type=spec.content_type if spec else "application/octet-stream",
            download_name=f"{name}-v{version}-{variant}.{spec.extension if spec else fmt}",
        )


class ModelDeltaDownloadApi(APIView):
    """The bsdiff4 patch that turns a file of ``from_version`` into the same file of ``version``."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(parameters=_HEADERS, responses=_RESPONSES)
    def get(self, request: Request, name: str, version: int, variant: str, from_version: int) -> HttpResponse:
        _download_allowed(request)
        fmt, variant_name = _split_variant(variant)
        delta = artifact_delta_get(
            project_slug=name, version=version, format=fmt, variant=variant_name, from_version=from_version
        )
        if delta is None:
            raise NotFound(
                f"No patch for {variant!r} of version {version} of {name!r} from version {from_version}.",
                code="delta_not_found",
            )
        return stored_file_response(
            request,
            name=delta.file.name,
            etag=delta.sha256,
            content_type="application/octet-stream",
            download_name=f"{name}-v{version}-{variant}.from-v{from_version}.bsdiff",
        )


def _download_allowed(request: Request) -> None:
    """401 without a valid app key, 429 above its per-minute limit for this install."""
    identity = app_identity_from_request(request)
    install_id = request.headers.get(INSTALL_ID_HEADER, "")
    if not INSTALL_ID.match(install_id):
        # No (or a forged-looking) install id: count per address, which the install id
        # pattern cannot collide with ("." and ":" are not in it).
        install_id = f"ip:{request.META.get('REMOTE_ADDR', '')}"
    rate_limit_check(identity, install_id=install_id, scope="download")


def _split_variant(variant: str) -> tuple[str, str]:
    # "<format>-<variant>": the format has no "-", the variant may ("pte-pruned-int8").
    fmt, _, variant_name = variant.partition("-")
    return fmt, variant_name
