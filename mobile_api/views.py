"""The app-facing API (/api/mobile/v1/): manifests and model downloads.

Versioned in the URL and only ever extended: apps in the field keep working.
"""
from __future__ import annotations

import hashlib
import json

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from common.errors import NotFound
from common.files import stored_file_response
from training.models import ModelArtifact, ModelVersion
from training.selectors import model_artifact_get, model_version_get_latest

RUNTIMES = {"onnx": "onnxruntime"}


def model_manifest(*, version: ModelVersion, request: HttpRequest) -> dict:
    """Everything an app needs to download, verify and feed one model version."""
    artifacts = [_artifact_entry(artifact, request) for artifact in version.artifacts.all()]
    primary = artifacts[0]
    return {
        "model": version.project.slug,
        "version": version.version,
        "created_at": version.created_at.isoformat(),
        "labels": version.labels,
        "input": version.preprocessing,
        "metrics": {"holdout_accuracy": version.metrics.get("accuracy")},
        # The recommended file, repeated at the top level for the simplest clients.
        "format": primary["format"],
        "sha256": primary["sha256"],
        "size": primary["size"],
        "download_url": primary["download_url"],
        "artifacts": artifacts,
    }


def _artifact_entry(artifact: ModelArtifact, request: HttpRequest) -> dict:
    path = reverse(
        "mobile-model-download",
        kwargs={
            "name": artifact.version.project.slug,
            "version": artifact.version.version,
            "variant": f"{artifact.format}-{artifact.precision}",
        },
    )
    return {
        "format": artifact.format,
        "precision": artifact.precision,
        "runtime": RUNTIMES.get(artifact.format, artifact.format),
        "size": artifact.size,
        "sha256": artifact.sha256,
        "download_url": request.build_absolute_uri(path),
    }


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
    """The manifest of the newest version; 304 when the app's ETag still matches."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: ManifestOutput, 304: None})
    def get(self, request: Request, name: str) -> HttpResponse:
        version = model_version_get_latest(project_slug=name)
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


class ModelDownloadApi(APIView):
    """The bytes of one artifact (a presigned redirect when storage is S3)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={(200, "application/octet-stream"): bytes, 206: bytes, 302: None})
    def get(self, request: Request, name: str, version: int, variant: str) -> HttpResponse:
        fmt, _, precision = variant.partition("-")
        artifact = model_artifact_get(project_slug=name, version=version, format=fmt, precision=precision)
        if artifact is None:
            raise Http404
        return stored_file_response(
            request,
            name=artifact.file.name,
            etag=artifact.sha256,
            content_type="application/octet-stream",
            download_name=f"{name}-v{version}-{variant}.{fmt}",
        )
