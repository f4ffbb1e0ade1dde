"""The nightly job as a service: claim, snapshot, train, verify, publish, all or nothing."""
import datetime as dt
import hashlib
import io
import shutil

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.nightly import training_run_execute
from training.runs import RunClaimRefused, training_run_claim
from training.snapshots import dataset_snapshot_create

pytestmark = pytest.mark.django_db

PER_LABEL = 15


@pytest.fixture
def approved(project, staff, hymenoptera, tmp_path):
    """PER_LABEL real ants and bees photos, imported and approved."""
    from submissions.services import photo_import_folder

    folder = tmp_path / "seed"
    for label in ("ants", "bees"):
        (folder / label).mkdir(parents=True)
        for path in sorted((hymenoptera / "train" / label).glob("*.jpg"))[:PER_LABEL]:
            shutil.copy(path, folder / label / path.name)
    counts = photo_import_folder(project=project, folder=folder, moderator=staff)
    assert counts["imported"] == 2 * PER_LABEL
    return project


def test_a_run_publishes_version_1_then_2_with_verified_files(approved, weights_path, fake_compression):
    # Real training and export; the compression stage is the stand-in (its real run: the slow test below).
    run = training_run_execute(project=approved, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    assert run.progress == 1.0 and run.stage == "done"
    version = ModelVersion.objects.get(project=approved)
    assert version.version == 1 and version.labels == ["ants", "bees"] and version.run == run
    assert version.preprocessing["input_size"] == 224 and version.preprocessing["mean"] == [0.5, 0.5, 0.5]
    artifact = version.artifacts.get(format="onnx", variant="fp32")
    # The compression stage got the trained torch model and the very samples training used.
    call = fake_compression.calls[0]
    assert call["model"] is not None and len(call["train"]) + len(call["holdout"]) == run.snapshot.photo_count
    assert {s.split for s in call["holdout"]} == {"holdout"} and {s.split for s in call["train"]} == {"train"}
    with default_storage.open(artifact.file.name) as fh:
        stored = fh.read()
    assert len(stored) == artifact.size and hashlib.sha256(stored).hexdigest() == artifact.sha256
    assert artifact.verification["top1_agreement"] >= 0.99
    assert 0.0 <= run.metrics["accuracy"] <= 1.0 and run.history
    assert run.config["snapshot"] == run.snapshot.manifest_sha256 and run.decision["strategy"] == "linear_probe"

    second = training_run_execute(project=approved, trigger=TrainingRun.Trigger.MANUAL)
    assert second.status == TrainingRun.Status.SUCCEEDED
    assert list(ModelVersion.objects.values_list("version", flat=True).order_by("version")) == [1, 2]
    # The same approved photos give the same snapshot, and version 1's file is untouched.
    assert second.snapshot == run.snapshot
    with default_storage.open(artifact.file.name) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == artifact.sha256


def test_snapshot_is_deterministic_and_records_splits(approved):
    first = dataset_snapshot_create(project=approved)
    again = dataset_snapshot_create(project=approved)
    assert first == again and DatasetSnapshot.objects.count() == 1
    photos = first.manifest["photos"]
    assert len(photos) == 2 * PER_LABEL and {p["split"] for p in photos} == {"train", "holdout"}
    counts = first.label_counts
    assert sum(c["train"] + c["holdout"] for c in counts.values()) == 2 * PER_LABEL


def test_a_failed_publish_leaves_no_version_and_no_file(approved, weights_path, _local_storage, fake_compression):
    # A file where the models/ folder must go: the storage write fails for real.
    _local_storage.mkdir(parents=True, exist_ok=True)
    (_local_storage / "models").write_text("in the way")

    with pytest.raises(OSError):
        training_run_execute(project=approved, trigger=TrainingRun.Trigger.MANUAL)

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.FAILED and "Error" in run.message
    assert ModelVersion.objects.count() == 0
    # Nothing published; only the export cache (never served) keeps the traced backbone.
    assert not [p for p in _local_storage.rglob("*.onnx") if "export-templates" not in p.parts]


def test_not_enough_photos_skips_with_a_reason(project):
    run = training_run_execute(project=project, trigger=TrainingRun.Trigger.MANUAL)
    assert run.status == TrainingRun.Status.SKIPPED
    assert "Not enough approved photos" in run.message and ModelVersion.objects.count() == 0


def test_one_nightly_run_per_project_and_night(project):
    night = dt.date(2026, 11, 22)
    training_run_claim(project=project, night=night, trigger=TrainingRun.Trigger.NIGHTLY)
    with pytest.raises(RunClaimRefused):
        training_run_claim(project=project, night=night, trigger=TrainingRun.Trigger.NIGHTLY)
    # Nor can a manual run start while that one is running.
    with pytest.raises(RunClaimRefused):
        training_run_claim(project=project, night=night, trigger=TrainingRun.Trigger.MANUAL)


def test_a_run_of_a_dead_worker_is_failed_and_does_not_block(project, settings):
    night = dt.date(2026, 11, 22)
    dead = training_run_claim(project=project, night=night, trigger=TrainingRun.Trigger.NIGHTLY)
    stale = dt.timedelta(seconds=settings.PLATFORM_RUN_STALE_SECONDS * 2)
    TrainingRun.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - stale)

    retry = training_run_claim(project=project, night=night, trigger=TrainingRun.Trigger.NIGHTLY)

    dead.refresh_from_db()
    assert dead.status == TrainingRun.Status.FAILED and "stopped reporting" in dead.message
    assert retry.status == TrainingRun.Status.RUNNING


def test_beat_entry_runs_the_nightly_task_for_every_project(project, settings):
    from config.celery import app
    from training.tasks import nightly_training_enqueue, training_run_nightly

    entry = settings.CELERY_BEAT_SCHEDULE["nightly-training"]
    assert entry["task"] == nightly_training_enqueue.name and entry["task"] in app.tasks

    nightly_training_enqueue.delay()  # eager here: the end-to-end test uses a real worker
    run = TrainingRun.objects.get()
    assert run.trigger == TrainingRun.Trigger.NIGHTLY and run.status == TrainingRun.Status.SKIPPED
    # A re-delivered task for the same night does nothing twice.
    assert training_run_nightly.delay(project.pk, run.night.isoformat()).get() == "claimed-elsewhere"
    assert TrainingRun.objects.count() == 1


def test_train_now_command_prints_the_decision_and_result(approved, weights_path, fake_compression):
    out = io.StringIO()
    call_command("train_now", project="ants-bees", stdout=out)
    text = out.getvalue()
    assert '"strategy": "linear_probe"' in text and "Published version 1" in text


@pytest.mark.slow
def test_a_real_run_compresses_and_publishes_the_offered_files(approved, weights_path, settings):
    """The real compression stage (fp32 and int8; ONNX, .pte, LiteRT, and a 4-bit Core ML package)
    behind real training: one version, all files."""
    from training.models import TrainingPolicy

    settings.PLATFORM_COMPRESSION_VARIANTS = ["fp32", "int8"]
    settings.PLATFORM_COMPRESSION_FORMATS = ["onnx", "pte", "tflite"]
    settings.PLATFORM_MAX_ACCURACY_LOSS_POINTS = 100 * 0.99  # 30 photos: the policy is not what is tested here
    TrainingPolicy.objects.create(project=approved, coreml_variants=["pal4"], coreml_offer=False)

    run = training_run_execute(project=approved, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    card = run.model_card
    assert {(r["variant"], r["format"]) for r in card["variants"]} >= {("fp32", "onnx"), ("int8", "onnx")}
    version = ModelVersion.objects.get(project=approved)
    assert version.model_card == card
    offered = {(r["variant"], r["format"]) for r in card["variants"] if r["status"] == "offered"}
    stored = {(a.variant, a.format) for a in version.artifacts.all()}
    assert stored == offered and ("fp32", "onnx") in stored
    for artifact in version.artifacts.all():
        with default_storage.open(artifact.file.name) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == artifact.sha256
    assert {a.format for a in version.artifacts.filter(recommended=True)} == {a.format for a in version.artifacts.all()}
    _real_tflite_and_core_ml_check(card, version)


def _real_tflite_and_core_ml_check(card: dict, version: ModelVersion) -> None:
    """The real MobileNetV2 as full-integer LiteRT (run by LiteRT from the stored bytes) and as 4-bit Core ML."""
    import numpy as np

    from training.ml.formats import STRUCTURE_ONLY, tflite_interpreter, tflite_runner, tflite_tensors

    rows = {(r["variant"], r["format"]): r for r in card["variants"]}
    int8 = rows[("int8", "tflite")]
    # Built, loaded and run by LiteRT from its bytes (not "failed"), at most 0.30x the fp32 .tflite
    # file (issue 17's target); stem and head in float as in the ONNX and pte files. The policy
    # decides from its fidelity: a few disagreements among a small project's witnesses cannot show
    # < 1% (bench, 550 witnesses: 3 disagree, rejected), and a rejected file must never reach apps.
    assert int8["status"] in ("offered", "rejected"), int8
    assert 0.0 <= int8["top1_agreement"] <= 1.0 and int8["size_ratio"] <= 0.30, int8
    if int8["status"] == "rejected":
        assert "disagree" in int8["reason"] or "agreement" in int8["reason"], int8["reason"]
    assert int8["tensors"]["inputs"][0]["dtype"] == "int8" and int8["tensors"]["outputs"][0]["dtype"] == "float32"
    # The stored bytes apps download: the int8 file if the policy offered it (else the fp32 one).
    stored = version.artifacts.filter(format="tflite").order_by("-recommended", "size").first()
    assert stored is not None and (stored.variant == "int8") == (int8["status"] == "offered")
    with default_storage.open(stored.file.name) as fh:
        payload = fh.read()
    assert tflite_tensors(tflite_interpreter(payload)) == rows[(stored.variant, "tflite")]["tensors"]
    size = stored.preprocessing["input_size"]
    probabilities = tflite_runner(payload)(np.zeros((1, 3, size, size), dtype=np.float32))
    assert probabilities.shape == (1, len(card["labels"])) and abs(float(probabilities.sum()) - 1) < 1e-3
    pal4 = rows[("pal4", "mlpackage")]
    assert pal4["status"] == "rejected" and STRUCTURE_ONLY in pal4["reason"]  # the policy offers no unexecuted files
    assert pal4["weight_bits"] == 4 and pal4["estimated"] and pal4["accuracy"] is not None
    assert pal4["size"] <= 0.2 * rows[("fp32", "onnx")]["size"]
    assert not version.artifacts.filter(format="mlpackage").exists()
