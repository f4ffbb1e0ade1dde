"""The staff import API: refusals with the right 4xx and nothing stored; a TFLite model from elsewhere reaches an app.

The model files are the tiny colour classifiers of tests/training/tiny_models (made with each
format's own tooling: tiny_models/make.py).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from mobile_api import services
from tests.training.conftest import colour_classifier
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

TINY = Path(__file__).resolve().parents[1] / "training" / "tiny_models"
URL = "/api/mobile/v1/staff/models/ants-bees/versions/import"


def _file(name: str, payload: bytes | None = None) -> io.BytesIO:
    data = io.BytesIO((TINY / name).read_bytes() if payload is None else payload)
    data.name = name
    return data


def _onnx(name: str = "colours.onnx") -> io.BytesIO:
    return _file(name, colour_classifier(["ants", "bees"]))


def _truncated(name: str) -> io.BytesIO:
    return _file(name, (TINY / name).read_bytes()[:200])


HALF = "0.5,0.5,0.5"
REFUSALS = [
    # (case, file, form fields, status, code)
    ("onnx: 2 outputs, 3 labels", _onnx, {"labels": "ants,bees,wasps"}, 422, "model_output_mismatch"),
    ("pte: 2 outputs, 3 labels", lambda: _file("colours.pte"), {"labels": "a,b,c", "mean": HALF, "std": HALF},
     422, "model_output_mismatch"),
    ("mlmodel: 2 class labels, 3 given", lambda: _file("colours.mlmodel"), {"labels": "a,b,c"}, 422,
     "labels_conflict"),
    ("onnx: 8 px input, 16 said", _onnx, {"labels": "ants,bees", "input_size": 16}, 422, "model_input_mismatch"),
    ("tflite: 8 px input, 224 said", lambda: _file("colours.tflite"),
     {"labels": "ants,bees", "input_size": 224, "mean": HALF, "std": HALF}, 422, "model_input_mismatch"),
    ("corrupt tflite", lambda: _truncated("colours.tflite"), {"labels": "ants,bees", "mean": HALF, "std": HALF},
     422, "model_load_failed"),
    ("corrupt pte", lambda: _truncated("colours.pte"), {"labels": "ants,bees", "mean": HALF, "std": HALF},
     422, "model_load_failed"),
    ("corrupt onnx", lambda: _file("m.onnx", b"\x08\x07" + bytes(range(256)) * 4), {"labels": "ants,bees"},
     422, "model_load_failed"),
    ("corrupt mlpackage zip", lambda: _truncated("colours.mlpackage.zip"), {}, 422, "model_load_failed"),
    ("unknown type", lambda: _file("model.bin", b"GIF89a" + b"\0" * 100), {"labels": "ants,bees"}, 415,
     "unsupported_model_format"),
    ("pte without labels", lambda: _file("colours.pte"), {"mean": HALF, "std": HALF}, 400, "labels_required"),
    ("pte without mean and std", lambda: _file("colours.pte"), {"labels": "ants,bees"}, 400,
     "preprocessing_required"),
]


def _nothing_stored(media_files) -> None:
    assert not ModelVersion.objects.exists() and not ModelArtifact.objects.exists()
    assert not TrainingRun.objects.exists() and not DatasetSnapshot.objects.exists()
    assert not [p for p in media_files() if "models" in p.parts]


@pytest.mark.django_db
@pytest.mark.parametrize("case, make, fields, status, code", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_file_gets_a_json_4xx_naming_the_problem_and_nothing_is_stored(
        staff_api, project, media_files, case, make, fields, status, code):
    response = staff_api.post(URL, {"file": make(), **fields})
    assert response.status_code == status, response.content[:400]
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    _nothing_stored(media_files)


@pytest.mark.django_db
def test_a_file_over_the_size_limit_is_a_413(staff_api, project, media_files, settings):
    settings.PLATFORM_MODEL_IMPORT_MAX_BYTES = 1000
    response = staff_api.post(URL, {"file": _file("colours.pte"), "labels": "ants,bees", "mean": HALF, "std": HALF})
    assert response.status_code == 413 and response.json()["error"]["code"] == "model_too_large"
    _nothing_stored(media_files)


@pytest.mark.django_db
def test_bad_form_values_and_unknown_projects_are_json_errors(staff_api, project):
    response = staff_api.post(URL, {"file": _onnx(), "labels": "ants,bees", "mean": "red"})
    assert response.status_code == 400 and "mean" in response.json()["error"]["message"]
    response = staff_api.post(URL.replace("ants-bees", "nope"), {"file": _onnx(), "labels": "ants,bees"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "project_not_found"


@pytest.mark.django_db
def test_the_import_route_is_in_the_schema(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/mobile/v1/staff/models/{name}/versions/import"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"201", "413", "415", "422"} <= set(operation["responses"])


@pytest.mark.django_db
def test_the_admin_form_imports_a_file_and_shows_refusals(admin_client, project):
    url = "/admin/training/modelversion/import/"
    refused = admin_client.post(url, {"project": project.pk, "file": _onnx(), "labels": "a,b,c"})
    assert refused.status_code == 422 and b"model_output_mismatch" in refused.content
    assert not ModelVersion.objects.exists()
    done = admin_client.post(url, {"project": project.pk, "file": _onnx(), "labels": "ants\nbees",
                                   "release_notes": "From our Colab notebook"})
    version = ModelVersion.objects.get()
    assert done.status_code == 302 and done["Location"].endswith(f"/{version.pk}/change/")
    assert version.release_notes == "From our Colab notebook"
    page = admin_client.get(done["Location"]).content.decode()
    assert "imported by" in page and version.source_sha256 in page
    # The public card and /releases/ say where the version came from.
    card = admin_client.get("/api/mobile/v1/models/ants-bees/versions/1/card").json()
    assert card["imported"]["sha256"] == version.source_sha256 and card["imported"]["filename"] == "colours.onnx"
    releases = admin_client.get("/releases/").content.decode()
    assert "Imported by" in releases and "From our Colab notebook" in releases


def _red_and_blue(preprocessing: dict) -> np.ndarray:
    """A red and a blue photo prepared exactly as the manifest's input says (NCHW float32)."""
    size = preprocessing["input_size"]
    mean, std = np.array(preprocessing["mean"]), np.array(preprocessing["std"])
    images = [np.asarray(Image.new("RGB", (size, size), c), dtype=np.float32) / 255.0
              for c in ((220, 20, 20), (20, 20, 220))]
    return np.stack([((x - mean) / std).transpose(2, 0, 1) for x in images]).astype(np.float32)


@pytest.mark.django_db(transaction=True)
def test_a_tflite_model_made_elsewhere_reaches_an_app_that_polls_for_tflite(staff_api, app_api, project):
    payload = (TINY / "colours.tflite").read_bytes()
    response = staff_api.post(URL, {"file": _file("colours.tflite"), "labels": "ants,bees", "mean": HALF,
                                    "std": HALF, "release_notes": "Trained in Colab"})
    assert response.status_code == 201, response.content[:400]
    imported = response.json()
    assert (imported["version"], imported["format"], imported["source"]) == (1, "tflite", "imported")
    assert imported["source_sha256"] == hashlib.sha256(payload).hexdigest()

    # Released on a channel of its own, for Android apps that accept TFLite.
    services.channel_create(project=project, name="android")
    promoted = staff_api.post("/api/mobile/v1/staff/models/ants-bees/channels/android/promote",
                              {"version": 1, "formats": ["tflite"], "reason": "moved from Firebase"}, format="json")
    assert promoted.status_code == 201, promoted.content[:400]

    poll = app_api.get("/api/mobile/v1/models/ants-bees/update", {
        "install_id": "install-0001", "app_version": "1.0", "platform": "android", "formats": "tflite",
        "channel": "android"})
    assert poll.status_code == 200, poll.content[:400]
    manifest = poll.json()
    assert manifest["version"] == 1 and manifest["labels"] == ["ants", "bees"]
    (artifact,) = manifest["artifacts"]
    assert (artifact["format"], artifact["runtime"]) == ("tflite", "litert")

    download = app_api.get(urlsplit(artifact["download_url"]).path)
    assert download.status_code == 200
    body = b"".join(download.streaming_content) if download.streaming else download.content
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"] == imported["source_sha256"]

    from training.ml.formats import tflite_runner  # the LiteRT interpreter, as the app runs it

    run = tflite_runner(body)
    scores = np.concatenate([run(x[None]) for x in _red_and_blue(artifact["input"])])
    assert [manifest["labels"][i] for i in scores.argmax(axis=1)] == ["ants", "bees"]


@pytest.mark.django_db(transaction=True)
def test_an_imported_mlmodel_is_offered_to_ios_apps_that_ask_for_it(staff_api, app_api, project):
    response = staff_api.post(URL, {"file": _file("colours.mlmodel")})
    assert response.status_code == 201, response.content[:400]
    # Released on the auto-promote channels like a trained version (the publish's event queues
    # mobile_api.tasks.version_distribute, run in-process by the tests' eager Celery); an app asks for mlmodel.
    poll = app_api.get("/api/mobile/v1/models/ants-bees/update", {
        "install_id": "install-0002", "app_version": "3.2.0", "platform": "ios", "formats": "mlmodel"})
    assert poll.status_code == 200, poll.content[:400]
    (artifact,) = poll.json()["artifacts"]
    assert (artifact["format"], artifact["runtime"]) == ("mlmodel", "coreml")
    assert artifact["input"]["layout"] == "image" and artifact["input"]["normalized_by_model"] is True
    assert "not executed" in artifact["verified"]
    download = app_api.get(urlsplit(artifact["download_url"]).path)
    body = b"".join(download.streaming_content) if download.streaming else download.content
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"] == response.json()["source_sha256"]
