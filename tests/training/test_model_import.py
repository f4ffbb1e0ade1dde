"""Importing models trained elsewhere: each format on tiny files, provenance, the nightly job after an import.

The files under tiny_models/ were made with each format's own tooling (tiny_models/make.py); all
are the colour classifier of conftest.py (red -> ants, blue -> bees), so a file fed the wrong
layout or normalisation gets the red and blue holdout photos wrong.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from tests.training.conftest import colour_classifier
from training.gating import training_run_gate
from training.imports import ImportRequest, labels_parse, model_version_import, triple_parse
from training.models import ModelVersion, TrainingRun
from training.nightly import release_of_snapshot
from training.snapshots import dataset_snapshot_create

pytestmark = pytest.mark.django_db

TINY = Path(__file__).parent / "tiny_models"
HALF = (0.5, 0.5, 0.5)


def upload(project, name: str, payload: bytes | None = None, user=None, **request):
    payload = (TINY / name).read_bytes() if payload is None else payload
    return model_version_import(project=project, file=io.BytesIO(payload), filename=name,
                                request=ImportRequest(**request), user=user)


def holdout_count(project) -> int:
    return sum(1 for e in dataset_snapshot_create(project=project).manifest["photos"] if e["split"] == "holdout")


def test_an_onnx_file_becomes_the_next_version_with_its_holdout_accuracy_and_provenance(colour_photos, staff):
    payload = colour_classifier(["ants", "bees"])  # carries its preprocessing as metadata_props
    version = upload(colour_photos, "colours.onnx", payload, user=staff, labels=["ants", "bees"])

    assert (version.version, version.source, version.imported_by) == (1, "imported", staff)
    assert version.source_sha256 == hashlib.sha256(payload).hexdigest()
    assert version.source_filename == "colours.onnx"
    assert "imported by" in version.provenance and staff.get_username() in version.provenance
    artifact = version.artifacts.get()
    assert (artifact.format, artifact.variant, artifact.sha256) == ("onnx", "fp32", version.source_sha256)
    with default_storage.open(artifact.file.name, "rb") as fh:
        assert fh.read() == payload  # the stored bytes are the uploaded ones
    # Every red and blue holdout photo right, with n and a Wilson interval below 1 at small n.
    n = holdout_count(colour_photos)
    interval = version.metrics["accuracy_interval"]
    assert (interval["value"], interval["n"]) == (1.0, n)
    assert interval["ci95"][0] < 1.0 and interval["ci95"][1] == 1.0
    row = version.model_card["variants"][0]
    assert row["executed"] and row["accuracy"] == 1.0 and row["latency_ms"] > 0
    assert version.preprocessing["input_size"] == 8 and version.preprocessing["output"] == "probabilities"
    assert version.run.trigger == TrainingRun.Trigger.IMPORT and version.run.requested_by == staff


def test_onnx_labels_come_from_the_files_metadata(project):
    payload = colour_classifier(["ants", "bees"], metadata={
        "preprocessing": {"input_size": 8, "resize": 8, "mean": [0.5] * 3, "std": [0.5] * 3},
        "labels": ["ants", "bees"],
    })
    version = upload(project, "m.onnx", payload)
    assert version.labels == ["ants", "bees"]
    assert "accuracy" not in version.metrics  # no approved photos: nothing to score, and it says so
    assert "accuracy not measured" in version.model_card["imported"]["note"]


def test_a_pte_file_takes_labels_and_normalisation_from_the_request(colour_photos):
    version = upload(colour_photos, "colours.pte", labels=["ants", "bees"], mean=HALF, std=HALF)
    assert version.artifacts.get().format == "pte"
    assert version.metrics["accuracy_interval"]["value"] == 1.0
    assert version.preprocessing["layout"] == "NCHW"


def test_an_nhwc_tflite_file_with_packed_labels_is_fed_in_its_layout(colour_photos):
    version = upload(colour_photos, "colours-nhwc-labels.tflite", mean=HALF, std=HALF)
    assert version.labels == ["ants", "bees"]  # from the label file packed into the model
    assert version.artifacts.get().preprocessing["layout"] == "NHWC"
    # Fed NCHW, the colour means would be mixed up and the bees misread.
    assert version.metrics["accuracy_interval"]["value"] == 1.0


@pytest.mark.parametrize("name, fmt, precision", [
    ("colours.mlmodel", "mlmodel", "fp32"),
    ("colours.mlpackage.zip", "mlpackage", "fp16"),
])
def test_core_ml_files_are_structure_checked_with_labels_and_scale_bias_from_the_file(
        colour_photos, name, fmt, precision):
    version = upload(colour_photos, name)
    artifact = version.artifacts.get()
    assert (artifact.format, artifact.precision) == (fmt, precision)
    assert version.labels == ["ants", "bees"]
    # ImageType(scale=1/127.5, bias=-1) is mean 0.5, std 0.5 in the manifest's terms.
    assert artifact.preprocessing["mean"] == [0.5] * 3 and artifact.preprocessing["std"] == [0.5] * 3
    assert artifact.preprocessing["layout"] == "image" and artifact.preprocessing["normalized_by_model"]
    row = version.model_card["variants"][0]
    assert row["executed"] is False and row["accuracy"] is None
    assert "structure verified, not executed on this host" in row["reason"]


@pytest.mark.parametrize("name, extra", [
    ("colours.onnx", {}),  # run by onnxruntime in the worker
    ("colours-nhwc-labels.tflite", {"mean": HALF, "std": HALF}),  # by LiteRT in a fresh process, fed NHWC
])
def test_the_next_night_trains_after_an_import_and_the_gate_scores_the_imported_release(colour_photos, name, extra):
    payload = colour_classifier(["ants", "bees"]) if name.endswith(".onnx") else None
    upload(colour_photos, name, payload, labels=["ants", "bees"], **extra)
    snapshot = dataset_snapshot_create(project=colour_photos)
    assert release_of_snapshot(project=colour_photos, snapshot=snapshot) is None  # not "no change": train

    n_ants = sum(1 for e in snapshot.manifest["photos"] if e["split"] == "holdout" and e["label"] == "ants")
    n_bees = sum(1 for e in snapshot.manifest["photos"] if e["split"] == "holdout" and e["label"] == "bees")
    # A candidate that calls everything "ants" is worse than the imported file, which is always right.
    worse = {"labels": ["ants", "bees"], "confusion": [[n_ants, 0], [n_bees, 0]]}
    everything_ants = {e["sha256"]: "ants" for e in snapshot.manifest["photos"] if e["split"] == "holdout"}
    record = training_run_gate(project=colour_photos, snapshot=snapshot, candidate=worse, predicted=everything_ants)
    # The imported release really ran on the holdout: right on every bee photo the candidate missed
    # (whether that refuses depends on how many there are: the paired gate's rule).
    assert record["champion"]["source"] == "imported" and record["champion"]["accuracy"] == 1.0
    assert (record["paired"]["overall"]["a_only"], record["paired"]["overall"]["b_only"]) == (0, n_bees)
    assert record["outcome"] == ("refused" if n_bees >= 6 else "passed")


def test_the_gate_says_when_an_imported_release_cannot_be_scored(colour_photos):
    upload(colour_photos, "colours.mlmodel")
    snapshot = dataset_snapshot_create(project=colour_photos)
    record = training_run_gate(project=colour_photos, snapshot=snapshot,
                               candidate={"labels": ["ants", "bees"], "confusion": [[1, 0], [0, 1]]}, predicted={})
    assert record["outcome"] == "skipped" and record["scored"] is False
    assert "could not be scored" in record["reason"] and "mlmodel" in record["reason"]


def test_label_and_channel_values_parse_from_text():
    assert labels_parse("ants\nbees\n") == ["ants", "bees"]
    assert labels_parse('["a", "b"]') == ["a", "b"] and labels_parse("a, b") == ["a", "b"]
    assert triple_parse("0.5") == HALF and triple_parse("[0.1,0.2,0.3]") == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError):
        triple_parse("1,2")


def test_the_command_imports_a_file_with_a_label_file(colour_photos, tmp_path, staff):
    from django.core.management import call_command

    labels = tmp_path / "labels.txt"
    labels.write_text("ants\nbees\n")
    out = io.StringIO()
    call_command("model_import", "ants-bees", str(TINY / "colours.tflite"), "--labels", str(labels),
                 "--mean", "0.5,0.5,0.5", "--std", "0.5", "--user", staff.username, stdout=out)
    version = ModelVersion.objects.get()
    assert version.labels == ["ants", "bees"] and version.imported_by == staff
    assert "Published ants-bees version 1" in out.getvalue() and "95% CI" in out.getvalue()


def test_a_failure_while_storing_leaves_no_row_and_no_object(project, media_files, monkeypatch):
    from training import publishing
    from training.models import DatasetSnapshot

    def mismatch(*, name, expected):
        raise publishing.StoredFileMismatch(f"{name}: read back differently")

    monkeypatch.setattr(publishing, "_stored_sha256_check", mismatch)
    with pytest.raises(publishing.StoredFileMismatch):
        upload(project, "colours.onnx", colour_classifier(["ants", "bees"]), labels=["ants", "bees"])
    assert not ModelVersion.objects.exists() and not TrainingRun.objects.exists()
    assert not DatasetSnapshot.objects.exists()
    assert not [p for p in media_files() if "models" in p.parts]


def test_the_import_page_sits_in_the_admins_trail_under_model_versions(admin_client):
    from django.urls import reverse

    page = admin_client.get(reverse("admin:training_modelversion_import"))
    html = page.content.decode()
    assert page.status_code == 200
    trail = html[html.index('class="breadcrumbs"'):html.index("</div>", html.index('class="breadcrumbs"'))]
    assert f'href="{reverse("admin:training_modelversion_changelist")}"' in trail and "Home" in trail
