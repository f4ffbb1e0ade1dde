"""Champion/challenger: the release (a real ONNX file, onnxruntime) against the candidate on one holdout."""
import io

import pytest
from django.core.management import CommandError, call_command

from tests.training.conftest import make_photo, photos_in_both_splits, release
from training.gating import training_run_gate
from training.ml.metrics import classification_metrics
from training.models import ModelVersion, TrainingRun
from training.nightly import training_run_execute
from training.snapshots import dataset_snapshot_create

pytestmark = pytest.mark.django_db


def _candidate(snapshot, *, labels, wrong: int = 0, wrong_label: str = "bees") -> dict:
    """Gate arguments of a candidate that is right except on `wrong` holdout photos of `wrong_label`."""
    holdout = [e for e in snapshot.manifest["photos"] if e["split"] == "holdout"]
    truth = [labels.index(e["label"]) for e in holdout]
    predicted = list(truth)
    for i, entry in enumerate(holdout):
        if wrong and entry["label"] == wrong_label:
            predicted[i] = (truth[i] + 1) % len(labels)
            wrong -= 1
    metrics = classification_metrics(y_true=truth, y_pred=predicted, labels=labels)
    answers = {e["sha256"]: labels[p] for e, p in zip(holdout, predicted)}
    return {"candidate": metrics.to_dict(), "predicted": answers}


def test_no_release_yet_skips_the_gate(colour_photos):
    snapshot = dataset_snapshot_create(project=colour_photos)
    candidate = _candidate(snapshot, labels=["ants", "bees"])
    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)
    assert gate["outcome"] == "skipped" and "No published version" in gate["reason"]


def test_an_equal_candidate_passes_and_both_scores_are_recorded(colour_photos):
    release(colour_photos, labels=["ants", "bees"])
    snapshot = dataset_snapshot_create(project=colour_photos)

    candidate = _candidate(snapshot, labels=["ants", "bees"])
    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)

    assert gate["outcome"] == "passed", gate
    # The colour classifier really ran on the holdout photos: it is right on all of them.
    assert gate["champion"]["accuracy"] == 1.0 and gate["champion"]["version"] == 1
    assert gate["candidate"]["accuracy"] == 1.0 and gate["compared"]["labels"] == ["ants", "bees"]
    assert gate["champion"]["count"] == gate["candidate"]["count"] == gate["compared"]["photos"]


def test_a_drop_the_photos_establish_is_refused_with_the_counts_and_the_tolerances_are_settings(
    colour_photos, settings
):
    release(colour_photos, labels=["ants", "bees"])
    photos_in_both_splits(colour_photos, label="bees", each=6)
    snapshot = dataset_snapshot_create(project=colour_photos)
    candidate = _candidate(snapshot, labels=["ants", "bees"], wrong=6)

    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)
    assert gate["outcome"] == "refused", gate
    # Six photos the release got right and the candidate wrong, none the other way: p = 2 / 2**6.
    bees = next(f for f in gate["failures"] if f.startswith("recall of bees"))
    assert "release was right on 6 photos the candidate got wrong, the candidate on 0" in bees
    assert "p=0.0312" in bees and gate["paired"]["per_label"]["bees"]["b_only"] == 6
    assert gate["candidate"]["accuracy_ci95"][0] < gate["candidate"]["accuracy"] < gate["candidate"]["accuracy_ci95"][1]

    settings.PLATFORM_GATE_TOLERANCE_OVERALL = 1.0
    settings.PLATFORM_GATE_TOLERANCE_PER_LABEL = 1.0
    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)
    assert gate["outcome"] == "passed" and gate["tolerance"] == {"overall": 1.0, "per_label": 1.0}


def test_a_drop_within_the_noise_passes_and_says_how_the_two_disagreed(colour_photos):
    release(colour_photos, labels=["ants", "bees"])
    snapshot = dataset_snapshot_create(project=colour_photos)
    # One bee wrong: recall of bees drops by half, but one photo cannot establish that.
    candidate = _candidate(snapshot, labels=["ants", "bees"], wrong=1)

    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)

    assert gate["outcome"] == "passed", gate
    assert "candidate right on 0, release on 1" in gate["reason"] and "p=1" in gate["reason"]
    assert gate["paired"]["overall"]["b_only"] == 1 and gate["paired"]["overall"]["p_value"] == 1.0


def test_different_labels_are_compared_on_the_shared_labels_only(colour_photos):
    release(colour_photos, labels=["ants", "bees"])
    colour_photos.labels.create(name="wasps", target_count=10)
    photos_in_both_splits(colour_photos, label="wasps")
    snapshot = dataset_snapshot_create(project=colour_photos)
    labels = ["ants", "bees", "wasps"]
    # The candidate gets every wasp wrong: wasps are new, so that is not the gate's business.
    candidate = _candidate(snapshot, labels=labels, wrong=99, wrong_label="wasps")

    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)

    assert gate["outcome"] == "passed", gate
    assert gate["compared"]["labels"] == ["ants", "bees"] and gate["compared"]["candidate_only_labels"] == ["wasps"]
    holdout_shared = [e for e in snapshot.manifest["photos"] if e["split"] == "holdout" and e["label"] != "wasps"]
    assert gate["compared"]["photos"] == len(holdout_shared) == gate["candidate"]["count"]


def test_a_refused_run_publishes_nothing_and_records_both_scores(colour_photos, fake_pipeline):
    release(colour_photos, labels=["ants", "bees"])
    photos_in_both_splits(colour_photos, label="bees", each=6)  # enough photos to establish the drop
    fake_pipeline.predict = lambda sample: 0  # the candidate calls everything an ant

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.REFUSED and "Worse than the current release (v1)" in run.message
    run.refresh_from_db()
    assert run.gate["outcome"] == "refused"
    assert run.gate["champion"]["accuracy"] == 1.0 and run.gate["candidate"]["accuracy"] < 1.0
    assert run.metrics["confusion"]  # the candidate's holdout is still shown
    assert list(ModelVersion.objects.values_list("version", flat=True)) == [1]


def test_a_candidate_as_good_as_the_release_is_published(colour_photos, fake_pipeline):
    release(colour_photos, labels=["ants", "bees"])

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    assert run.gate["outcome"] == "passed" and run.model_version.version == 2
    # The manifest's hash is on the run and, through its snapshot, on the version.
    assert run.config["snapshot"] == run.model_version.snapshot.manifest_sha256 == run.snapshot.manifest_sha256


def test_train_now_prints_the_decision_and_the_gate_outcome(colour_photos, fake_pipeline):
    release(colour_photos, labels=["ants", "bees"])
    out = io.StringIO()
    call_command("train_now", project=colour_photos.slug, stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert '"strategy": "linear_probe"' in text and "Gate: passed" in text and "Published version 2" in text
    # Every figure printed carries its n and its 95% interval.
    assert "Holdout accuracy 1.000 (95% CI " in text and "recall of bees: 1.000 (95% CI " in text
    assert f"n={run_holdout_count(colour_photos)})" in text

    fake_pipeline.predict = lambda sample: 0
    photos_in_both_splits(colour_photos, label="bees", each=6)
    out = io.StringIO()
    with pytest.raises(CommandError, match="refused"):
        call_command("train_now", project=colour_photos.slug, stdout=out, stderr=io.StringIO())
    assert "Gate: refused" in out.getvalue() and '"champion"' in out.getvalue()


def run_holdout_count(project) -> int:
    from training.models import TrainingRun as Run

    return Run.objects.filter(project=project).order_by("-pk").first().metrics["count"]


def test_an_unreadable_release_skips_the_gate_with_the_reason(colour_photos):
    version = release(colour_photos, labels=["ants", "bees"])
    version.artifacts.update(sha256="0" * 64)  # stored bytes no longer match the registry
    snapshot = dataset_snapshot_create(project=colour_photos)
    make_photo(project=colour_photos, label="ants")

    candidate = _candidate(snapshot, labels=["ants", "bees"])
    gate = training_run_gate(project=colour_photos, snapshot=snapshot, **candidate)

    assert gate["outcome"] == "skipped" and "could not be scored" in gate["reason"]


def test_a_night_without_new_photos_publishes_nothing_new(colour_photos, fake_pipeline):
    import datetime as dt

    first = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.NIGHTLY, night=dt.date(2026, 11, 1))
    assert first.status == TrainingRun.Status.SUCCEEDED

    quiet = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.NIGHTLY, night=dt.date(2026, 11, 2))
    assert quiet.status == TrainingRun.Status.SKIPPED and "since version 1" in quiet.message
    assert ModelVersion.objects.count() == 1 and len(fake_pipeline.calls) == 1  # apps keep their file

    make_photo(project=colour_photos, label="ants")  # a new approved photo
    busy = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.NIGHTLY, night=dt.date(2026, 11, 3))
    assert busy.status == TrainingRun.Status.SUCCEEDED and busy.model_version.version == 2

    manual = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    assert manual.status == TrainingRun.Status.SUCCEEDED  # train_now retrains on request
