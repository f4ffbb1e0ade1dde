"""The app-facing API (/api/mobile/v1/): manifests and model cards.

Versioned in the URL and only ever extended: apps in the field keep working.
"""
from __future__ import annotations

import hashlib
import json

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from common.errors import NotFound
from training.models import ModelArtifact, ModelVersion
from training.selectors import model_version_get, model_version_get_latest

# format -> (runtime that loads the file, its delegate)
RUNTIMES = {"onnx": ("onnxruntime", None), "pte": ("executorch", "xnnpack")}
_FORMAT_ORDER = {"onnx": 0, "pte": 1}
# Measurements (the file's model card row) an app may use to choose between alternatives.
ARTIFACT_METRICS = ("accuracy", "top1_agreement", "latency_ms", "threads", "peak_memory_mb")


def model_manifest(*, version: ModelVersion, request: HttpRequest) -> dict:
    """Everything an app needs to download, verify and feed one model version.

    ``artifacts`` lists every offered file (the float model and its compressed alternatives),
    per format the recommended one first. The top-level ``format``, ``sha256``, ``size``,
    ``download_url`` and ``input`` describe the recommended ONNX file, so the simplest client
    (and every app released before compression) keeps working unchanged.
    """
    ordered = sorted(
        version.artifacts.all(),
        key=lambda a: (_FORMAT_ORDER.get(a.format, len(_FORMAT_ORDER)), a.format, not a.recommended, a.size, a.variant),
    )
    artifacts = [_artifact_entry(artifact, version, request) for artifact in ordered]
    primary = (
        next((a for a in artifacts if a["recommended"] and a["format"] == "onnx"), None)
        or next((a for a in artifacts if a["recommended"]), None)
        or artifacts[0]
    )
    return {
        "model": version.project.slug,
        "version": version.version,
        "created_at": version.created_at.isoformat(),
        "labels": version.labels,
        "input": primary["input"],
        "metrics": {"holdout_accuracy": version.metrics.get("accuracy")},
        # The recommended file, repeated at the top level for the simplest clients.
        "format": primary["format"],
        "sha256": primary["sha256"],
        "size": primary["size"],
        "download_url": primary["download_url"],
        "artifacts": artifacts,
    }


def _artifact_entry(artifact: ModelArtifact, version: ModelVersion, request: HttpRequest) -> dict:
    path = reverse(
        "mobile-model-download",
        kwargs={
            "name": version.project.slug,
            "version": version.version,
            "variant": f"{artifact.format}-{artifact.variant}",
        },
    )
    runtime, delegate = RUNTIMES.get(artifact.format, (artifact.format, None))
    measurements = artifact.measurements or {}
    return {
        "format": artifact.format,
        "variant": artifact.variant,
        "precision": artifact.precision,
        "recommended": artifact.recommended,
        "runtime": runtime,
        "delegate": delegate,
        # The file's own input: a distilled student may take smaller images than the float model.
        "input": artifact.preprocessing or version.preprocessing,
        "companions": artifact.companions or [],
        "metrics": {key: measurements.get(key) for key in ARTIFACT_METRICS},
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
