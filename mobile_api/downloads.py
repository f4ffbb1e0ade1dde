"""Model files for apps: the bytes of an artifact (byte ranges; a presigned redirect on S3)."""
from __future__ import annotations

from django.http import Http404, HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from common.files import stored_file_response
from training.selectors import model_artifact_get


class ModelDownloadApi(APIView):
    """The bytes of one artifact (a presigned redirect when storage is S3)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={(200, "application/octet-stream"): bytes, 206: bytes, 302: None})
    def get(self, request: Request, name: str, version: int, variant: str) -> HttpResponse:
        # "<format>-<variant>": the format has no "-", the variant may ("pte-pruned-int8").
        fmt, _, variant_name = variant.partition("-")
        artifact = model_artifact_get(project_slug=name, version=version, format=fmt, variant=variant_name)
        if artifact is None:
            raise Http404
        return stored_file_response(
            request,
            name=artifact.file.name,
            etag=artifact.sha256,
            content_type="application/octet-stream",
            download_name=f"{name}-v{version}-{variant}.{fmt}",
        )
