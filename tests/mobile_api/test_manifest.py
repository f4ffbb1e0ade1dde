"""The legacy manifest (/latest, ETag/304) and model cards; downloads are tested in test_downloads.py."""
import datetime as dt
import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

PREPROCESSING = {
    "input_size": 224, "resize": 256, "resize_mode": "shorter_side_bilinear_antialias", "crop": "center",
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


def test_unknown_model_is_404_json(api, project):
    response = api.get("/api/mobile/v1/models/wasps/latest")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_openapi_schema_and_docs_page(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/photos/", "/api/v1/challenges/today/", "/api/mobile/v1/models/{name}/latest",
                 "/api/v1/moderation/photos/{photo_id}/decision/", "/api/v1/auth/signup/"):
        assert path in paths
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def publish_alternatives(project, number: int = 1) -> ModelVersion:
    """A version with the float model and compressed alternatives in two formats, as the job writes them.

    The .pte payloads are placeholder bytes: these tests store, list and serve them, never run them.
    """
    version = publish(project, number, b"fp32 onnx" * 400)
    version.artifacts.update(recommended=False, preprocessing=PREPROCESSING, measurements={"accuracy": 0.95})
    version.model_card = {"schema": 1, "published": True, "variants": [{"variant": "int8", "format": "pte"}]}
    version.save()
    student = {**PREPROCESSING, "input_size": 160, "resize": 183}
    for variant, fmt, precision, payload, recommended, preprocessing in [
        ("int8", "onnx", "int8", b"int8 onnx" * 100, False, PREPROCESSING),
        ("distilled-int8", "onnx", "int8", b"student" * 50, True, student),
        ("fp32", "pte", "fp32", b"fp32 pte" * 400, False, PREPROCESSING),
        ("int8", "pte", "int8", bytes(range(256)) * 4, True, PREPROCESSING),
        ("pruned-int8", "pte", "int8", b"pruned pte" * 120, False, PREPROCESSING),
    ]:
        name = default_storage.save(f"models/{project.slug}/v{number}/{variant}.{fmt}", ContentFile(payload))
        ModelArtifact.objects.create(
            version=version, format=fmt, variant=variant, precision=precision, recommended=recommended, file=name,
            size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), preprocessing=preprocessing,
            measurements={"accuracy": 0.94, "top1_agreement": 0.98, "latency_ms": 4.5, "threads": 1,
                          "peak_memory_mb": 31.0, "status": "offered"},
            verification={},
        )
    return version


def test_the_manifest_lists_every_alternative_recommended_first_per_format(api, project):
    publish_alternatives(project)

    manifest = api.get("/api/mobile/v1/models/ants-bees/latest").json()

    order = [(a["format"], a["variant"]) for a in manifest["artifacts"]]
    assert order == [("onnx", "distilled-int8"), ("onnx", "int8"), ("onnx", "fp32"),
                     ("pte", "int8"), ("pte", "pruned-int8"), ("pte", "fp32")]
    entries = {(a["format"], a["variant"]): a for a in manifest["artifacts"]}
    student = entries[("onnx", "distilled-int8")]
    assert student["recommended"] is True and student["precision"] == "int8"
    assert student["input"]["input_size"] == 160  # the student's own input, not the float model's
    assert student["runtime"] == "onnxruntime" and student["delegate"] is None and student["companions"] == []
    assert student["metrics"] == {"accuracy": 0.94, "top1_agreement": 0.98, "latency_ms": 4.5, "threads": 1,
                                  "peak_memory_mb": 31.0}
    pte = entries[("pte", "int8")]
    assert pte["runtime"] == "executorch" and pte["delegate"] == "xnnpack" and pte["recommended"] is True
    assert pte["download_url"].endswith("/api/mobile/v1/models/ants-bees/versions/1/pte-int8")
    assert entries[("onnx", "fp32")]["download_url"].endswith("/versions/1/onnx-fp32")  # unchanged for old apps
    assert entries[("onnx", "fp32")]["metrics"]["latency_ms"] is None
    # The top level is the recommended ONNX file, with its own input.
    assert (manifest["format"], manifest["sha256"], manifest["size"]) == ("onnx", student["sha256"], student["size"])
    assert manifest["download_url"] == student["download_url"] and manifest["input"]["input_size"] == 160


def test_without_a_recommended_onnx_the_top_level_is_the_first_recommended_file(api, project):
    version = publish_alternatives(project)
    version.artifacts.filter(format="onnx").delete()

    manifest = api.get("/api/mobile/v1/models/ants-bees/latest").json()

    assert manifest["format"] == "pte" and manifest["download_url"].endswith("/versions/1/pte-int8")


def test_the_card_endpoint_serves_the_version_card(api, project):
    version = publish_alternatives(project)

    response = api.get("/api/mobile/v1/models/ants-bees/versions/1/card")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json() == version.model_card

    for url in ("/api/mobile/v1/models/ants-bees/versions/9/card", "/api/mobile/v1/models/wasps/versions/1/card"):
        missing = api.get(url)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_version_not_found"

    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/mobile/v1/models/{name}/versions/{version}/card" in schema["paths"]
