"""Fixtures for the app protocol: app keys, clients that send them, published versions."""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from mobile_api.auth import key_generate
from mobile_api.models import AppKey
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

PREPROCESSING = {
    "input_size": 224, "resize": 256, "resize_mode": "shorter_side_bilinear_antialias", "crop": "center",
    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "channel_order": "RGB", "layout": "NCHW",
}


@pytest.fixture
def app_key(db) -> tuple[AppKey, str]:
    """An active app key: (its row, the key an app sends)."""
    key, prefix, digest = key_generate()
    return AppKey.objects.create(name="Test app", prefix=prefix, key_sha256=digest), key


@pytest.fixture
def app_api(app_key) -> APIClient:
    """A client that sends a valid X-App-Key on every request."""
    client = APIClient()
    client.credentials(HTTP_X_APP_KEY=app_key[1])
    return client


@pytest.fixture
def make_version(db):
    """make_version(project, number, files={("onnx", "fp32"): b"...", ...}) -> a published ModelVersion.

    The registry rows exactly as the nightly job writes them (stored files, sha256, sizes);
    the first file of each format is its recommended one.
    """

    def make(project, number: int, files: dict[tuple[str, str], bytes] | None = None) -> ModelVersion:
        files = files or {("onnx", "fp32"): f"model v{number}".encode() * 100}
        snapshot, _ = DatasetSnapshot.objects.get_or_create(
            project=project, manifest_sha256=f"{number:064d}",
            defaults={"manifest": {}, "label_counts": {}, "photo_count": 0},
        )
        run = TrainingRun.objects.create(
            project=project, night=dt.date(2026, 1, 1) + dt.timedelta(days=number), trigger="manual",
            status="succeeded",
        )
        version = ModelVersion.objects.create(
            project=project, version=number, run=run, snapshot=snapshot, labels=["ants", "bees"],
            preprocessing=PREPROCESSING, metrics={"accuracy": 0.95, "count": 40},
        )
        seen_formats: set[str] = set()
        for (fmt, variant), payload in files.items():
            name = default_storage.save(
                f"models/{project.slug}/v{number}/{project.slug}-v{number}-{variant}.{fmt}", ContentFile(payload)
            )
            ModelArtifact.objects.create(
                version=version, format=fmt, variant=variant, precision="int8" if "int8" in variant else "fp32",
                recommended=fmt not in seen_formats, file=name, size=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(), preprocessing=PREPROCESSING,
                measurements={"accuracy": 0.95}, verification={},
            )
            seen_formats.add(fmt)
        return version

    return make
