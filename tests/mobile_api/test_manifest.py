"""The app-facing manifest (ETag/304) and model download (full and byte ranges)."""
import datetime as dt
import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

PREPROCESSING = {
    "input_size": 224, "resize": 256, "resize_mode": "shorter_side_bilinear", "crop": "center",
    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "channel_order": "RGB", "layout": "NCHW",
}


def publish(project, number: int, payload: bytes) -> ModelVersion:
    """A published version whose file holds `payload` (the registry rows as the job writes them)."""
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project, manifest_sha256="0" * 64, defaults={"manifest": {}, "label_counts": {}, "photo_count": 0}
    )
    run = TrainingRun.objects.create(
        project=project, night=dt.date(2026, 11, number), trigger="manual", status="succeeded"
    )
    version = ModelVersion.objects.create(
        project=project, version=number, run=run, snapshot=snapshot, labels=["ants", "bees"],
        preprocessing=PREPROCESSING, metrics={"accuracy": 0.95},
    )
    name = default_storage.save(f"models/{project.slug}/v{number}/model.onnx", ContentFile(payload))
    ModelArtifact.objects.create(
        version=version, format="onnx", precision="fp32", file=name, size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(), verification={},
    )
    return version


def test_latest_manifest_says_how_to_feed_the_model(api, project):
    publish(project, 1, b"one" * 100)
    publish(project, 2, b"two" * 1000)

    response = api.get("/api/mobile/v1/models/ants-bees/latest")

    assert response.status_code == 200
    manifest = response.json()
    assert manifest["version"] == 2 and manifest["labels"] == ["ants", "bees"]
    assert manifest["size"] == 3000 and manifest["sha256"] == hashlib.sha256(b"two" * 1000).hexdigest()
    assert manifest["input"]["input_size"] == 224 and manifest["input"]["mean"] == [0.5, 0.5, 0.5]
    assert manifest["download_url"].startswith("http://testserver/api/mobile/v1/models/ants-bees/versions/2/")


def test_matching_etag_gives_304_and_a_new_version_changes_it(api, project):
    publish(project, 1, b"one")
    first = api.get("/api/mobile/v1/models/ants-bees/latest")
    etag = first["ETag"]

    again = api.get("/api/mobile/v1/models/ants-bees/latest", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b""

    publish(project, 2, b"two")
    changed = api.get("/api/mobile/v1/models/ants-bees/latest", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag and changed.json()["version"] == 2


def test_download_serves_the_bytes_and_resumes_with_ranges(api, project):
    payload = bytes(range(256)) * 40
    publish(project, 1, payload)
    url = api.get("/api/mobile/v1/models/ants-bees/latest").json()["download_url"]

    full = api.get(url)
    assert full.status_code == 200 and b"".join(full.streaming_content) == payload
    assert full["Content-Length"] == str(len(payload)) and full["Accept-Ranges"] == "bytes"

    part = api.get(url, HTTP_RANGE="bytes=1000-")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 1000-{len(payload) - 1}/{len(payload)}"
    assert b"".join(part.streaming_content) == payload[1000:]

    tail = api.get(url, HTTP_RANGE="bytes=-10")
    assert b"".join(tail.streaming_content) == payload[-10:]

    beyond = api.get(url, HTTP_RANGE=f"bytes={len(payload)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(payload)}"


def test_unknown_model_and_variant_are_404_json(api, project):
    response = api.get("/api/mobile/v1/models/wasps/latest")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    publish(project, 1, b"x")
    response = api.get("/api/mobile/v1/models/ants-bees/versions/1/tflite-int4")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_openapi_schema_and_docs_page(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/photos/", "/api/v1/challenges/today/", "/api/mobile/v1/models/{name}/latest",
                 "/api/v1/moderation/photos/{photo_id}/decision/", "/api/v1/auth/signup/"):
        assert path in paths
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
