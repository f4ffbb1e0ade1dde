"""The reference client against the real server: a live HTTP server, real files, real runtimes.

One story, as an app lives it: poll (200), poll again (304, nothing downloaded), download
after an interruption (resumed with a Range request, sha256 verified), load with
onnxruntime, classify a real photo exactly as the server's own model code does, report
telemetry (202); then a new version arrives with a binary patch (applied and verified),
and a tampered patch on the server makes another install fall back to the full file.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageOps

from mobile_api import auth, update
from mobile_api import client as mc
from mobile_api.deltas import version_deltas_build
from mobile_api.models import ArtifactDelta, Channel, ReleaseHealth
from mobile_api.services import app_key_create, channel_defaults_ensure, release_promote, static_manifest_name
from training.ml.config import Preprocessing
from training.ml.images import image_to_array
from training.ml.testing import tiny_onnx_classifier
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

LABELS = ["ants", "bees"]
PREPROCESSING = Preprocessing(input_size=32, resize=36)
CHANNELS = 64


def tiny_classifier(*, seed: int = 0, nudge: int = 0) -> bytes:
    """A real ONNX image classifier: Conv 3x3 -> ReLU -> global average pool -> Gemm -> Softmax.

    ``nudge`` changes that many convolution weights a little: the next night's "slightly
    different" model, whose bytes are mostly the same (what deltas are for).
    """
    return tiny_onnx_classifier(num_classes=len(LABELS), input_size=PREPROCESSING.input_size,
                                conv_channels=CHANNELS, seed=seed, nudge=nudge)


def publish(project, number: int, payload: bytes) -> ModelVersion:
    """A published version with one ONNX file, registry rows as the nightly job writes them."""
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project, manifest_sha256=f"{number:064d}",
        defaults={"manifest": {}, "label_counts": {}, "photo_count": 0},
    )
    run = TrainingRun.objects.create(project=project, night=dt.date(2026, 11, number), trigger="manual",
                                     status="succeeded")
    version = ModelVersion.objects.create(
        project=project, version=number, run=run, snapshot=snapshot, labels=LABELS,
        preprocessing=PREPROCESSING.to_manifest(), metrics={"accuracy": 0.9},
    )
    name = default_storage.save(f"models/{project.slug}/v{number}/{project.slug}-v{number}-fp32.onnx",
                                ContentFile(payload))
    ModelArtifact.objects.create(
        version=version, format="onnx", variant="fp32", precision="fp32", recommended=True, file=name,
        size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), preprocessing=PREPROCESSING.to_manifest(),
        measurements={"accuracy": 0.9}, verification={},
    )
    return version


def server_prediction(payload: bytes, photo) -> np.ndarray:
    """What the server's own model code says about the photo (stored uploads are upright)."""
    import onnxruntime as ort

    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    with Image.open(photo) as image:
        x = image_to_array(ImageOps.exif_transpose(image), preprocessing=PREPROCESSING)[np.newaxis]
    return session.run(None, {session.get_inputs()[0].name: x})[0][0]


@pytest.fixture
def server(live_server, settings, project):
    """The live server, with absolute URLs in manifests pointing at it, and an app key."""
    settings.PLATFORM_BASE_URL = live_server.url
    update.memo_clear()
    auth._memo.clear()
    _, key = app_key_create(name="E2E app")
    (stable, *_) = [c for c in channel_defaults_ensure(project=project) if c.name == "stable"]
    return live_server.url, key, stable


def test_the_reference_client_against_the_real_server(server, project, hymenoptera, tmp_path):
    base_url, key, stable = server
    v1_bytes = tiny_classifier()
    v1 = publish(project, 1, v1_bytes)
    release_promote(channel=stable, version=v1, reason="e2e")

    def client_for(install_id: str) -> mc.ModelClient:
        return mc.ModelClient(base_url, key, "ants-bees", install_id, tmp_path / install_id, "2.3.0", "android",
                              ["pte", "onnx"])  # prefers .pte; the release has only ONNX

    app = client_for("install-alpha-0001")
    other = client_for("install-beta-00002")

    # 1. Poll: a manifest; poll again: 304 and nothing new to download.
    manifest = app.check()
    assert app.last_status == 200 and manifest["version"] == 1 and manifest["labels"] == LABELS
    assert app.check() is manifest and app.last_status is None  # within poll_interval_seconds: no request
    assert app.check(force=True)["version"] == 1 and app.last_status == 304

    # The static channel manifest (for a CDN) gives an app resolving on its own the same answer.
    with default_storage.open(static_manifest_name(model="ants-bees", channel="stable"), "rb") as fh:
        document = json.load(fh)
    assert mc.manifest_from_document(document, install_id=app.install_id, platform="android", app_version="2.3.0",
                                     formats=["pte", "onnx"]) == manifest

    # 2. An interrupted download: half the file is already in the .part file.
    artifact = app.artifact_choose()
    assert (artifact["format"], artifact["sha256"]) == ("onnx", hashlib.sha256(v1_bytes).hexdigest())
    part = app.file_path(1, artifact).with_name("ants-bees-v1-onnx-fp32.onnx.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(v1_bytes[: len(v1_bytes) // 2])
    result = app.download()
    assert result.via == "resumed" and result.bytes_transferred == len(v1_bytes) - len(v1_bytes) // 2
    assert result.path.read_bytes() == v1_bytes and not part.exists()
    assert app.download().via == "cached"
    assert app.check(force=True)["version"] == 1 and app.last_status == 304
    assert other.check()["version"] == 1 and other.download().via == "full"

    # 3. Load with onnxruntime and classify a real photo as the server's model code does.
    photo = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[0]
    app.load()
    label, probabilities = app.classify(photo)
    expected = server_prediction(v1_bytes, photo)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert label == LABELS[int(np.argmax(expected))]

    # 4. Telemetry: downloaded, loaded, one inference latency.
    assert app.report() == 202
    health = ReleaseHealth.objects.get(release__channel=stable, release__version=v1)
    assert (health.downloaded, health.loaded, health.load_failed) == (1, 1, 0)

    # 5. The next version differs slightly and ships with a patch from v1.
    v2_bytes = tiny_classifier(nudge=20)
    assert v2_bytes != v1_bytes and len(v2_bytes) == len(v1_bytes)
    v2 = publish(project, 2, v2_bytes)
    (delta,) = version_deltas_build(version=v2)
    assert delta.size < len(v2_bytes) / 2
    release_promote(channel=stable, version=v2, reason="e2e v2")

    manifest = app.check(force=True)
    assert app.last_status == 200 and manifest["version"] == 2
    (offered,) = app.artifact_choose()["deltas"]
    assert (offered["from_version"], offered["sha256"]) == (1, delta.sha256)
    result = app.download()
    assert result.via == "delta" and result.bytes_transferred == delta.size
    assert result.path.read_bytes() == v2_bytes and app.installed.version == 2
    # v1's file stays beside v2's: the next patch may start from either.
    assert app.file_path(1, artifact).exists()
    app.load()
    np.testing.assert_allclose(app.classify(photo)[1], server_prediction(v2_bytes, photo), atol=1e-5)

    # 6. A tampered patch on the server: the other install falls back to the full file.
    stored = ArtifactDelta.objects.get(pk=delta.pk).file.name
    good_patch = default_storage.open(stored, "rb").read()
    default_storage.delete(stored)
    default_storage.save(stored, ContentFile(good_patch[:-16] + bytes(16)))
    assert other.check(force=True)["version"] == 2
    result = other.download()
    assert result.via == "full" and result.path.read_bytes() == v2_bytes
    assert isinstance(other.last_delta_error, mc.IntegrityError)
    assert other.report() == 202
    assert Channel.objects.get(pk=stable.pk).releases.count() == 2

    # 7. The command line does the whole loop for a new install.
    script = Path(mc.__file__)
    out = subprocess.run(
        [sys.executable, str(script), "--base-url", base_url, "--key", key, "--model", "ants-bees",
         "--cache-dir", str(tmp_path / "cli"), "--formats", "onnx", str(photo)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "check: 200; version 2" in out.stdout and "download: v2 via full" in out.stdout
    assert f"{photo}: {LABELS[int(np.argmax(server_prediction(v2_bytes, photo)))]}" in out.stdout
    assert "report: 202" in out.stdout


def test_a_wrong_app_key_is_refused_with_the_protocol_error(server, tmp_path):
    base_url, _, _ = server
    client = mc.ModelClient(base_url, "mk_nope_wrong", "ants-bees", "install-alpha-0001", tmp_path, "2.3.0",
                            "android", ["onnx"])
    with pytest.raises(mc.ServerError) as caught:
        client.check()
    assert (caught.value.status, caught.value.code) == (401, "app_key_invalid")


def test_an_nhwc_tflite_model_imported_by_staff_reaches_the_reference_client(server, project, staff_api, tmp_path):
    """A Firebase-era TFLite file (made by litert-torch outside the pipeline, NHWC input, labels packed
    in the file) is imported through the staff API, released on an Android channel, and an app
    polling with formats=tflite downloads it (sha256 checked), loads it with LiteRT and runs it."""
    pytest.importorskip("ai_edge_litert")
    from mobile_api.services import channel_create

    base_url, key, _ = server
    payload = (Path(__file__).resolve().parents[1] / "training" / "tiny_models" / "colours-nhwc-labels.tflite"
               ).read_bytes()
    upload = io.BytesIO(payload)
    upload.name = "colours.tflite"
    response = staff_api.post("/api/mobile/v1/staff/models/ants-bees/versions/import",
                              {"file": upload, "mean": "0.5,0.5,0.5", "std": "0.5,0.5,0.5"})
    assert response.status_code == 201, response.content[:400]
    assert response.json()["source_sha256"] == hashlib.sha256(payload).hexdigest()
    channel_create(project=project, name="android")
    promoted = staff_api.post("/api/mobile/v1/staff/models/ants-bees/channels/android/promote",
                              {"version": 1, "formats": ["tflite"], "reason": "moved from Firebase"}, format="json")
    assert promoted.status_code == 201, promoted.content[:400]

    client = mc.ModelClient(base_url, key, "ants-bees", "install-nhwc-0001", tmp_path / "app", "1.0", "android",
                            ["tflite"], channel="android")
    manifest = client.check()
    (artifact,) = manifest["artifacts"]
    assert (artifact["format"], artifact["input"]["layout"]) == ("tflite", "NHWC")
    assert artifact["tensors"]["inputs"][0]["shape"] == [1, 8, 8, 3]
    result = client.download()
    assert result.path.read_bytes() == payload and client.installed.sha256 == hashlib.sha256(payload).hexdigest()
    for colour, expected in (((220, 20, 20), "ants"), ((20, 20, 220), "bees")):
        photo = tmp_path / f"{expected}.png"
        Image.new("RGB", (24, 16), colour).save(photo)
        label, probabilities = client.classify(photo)
        assert label == expected and max(probabilities) > 0.9
    assert [e["event"] for e in client.pending_events] == ["downloaded", "loaded"]
    assert client.report() == 202
