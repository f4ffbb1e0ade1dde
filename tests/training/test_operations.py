"""Operating the job: cancellation, per-project strategy override, the admin run page, the feature cache."""
import shutil

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from tests.training.conftest import release
from training.feature_cache import StorageFeatureCache
from training.models import ModelVersion, TrainingPolicy, TrainingRun
from training.nightly import training_run_execute

pytestmark = pytest.mark.django_db


def test_an_admin_cancels_a_running_run_and_nothing_is_published(colour_photos, fake_pipeline, admin_client):
    def on_progress(run):
        # The admin presses "cancel" while the features are being computed.
        if run.stage == "features" and not run.cancel_requested:
            response = admin_client.post(
                reverse("admin:training_trainingrun_changelist"),
                {"action": "cancel_runs", "_selected_action": [run.pk]},
            )
            assert response.status_code == 302
            run.cancel_requested = True  # so the callback asks only once

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL, on_progress=on_progress)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.cancel_requested
    assert "Cancelled by an admin" in run.message and run.finished_at is not None
    assert ModelVersion.objects.count() == 0
    # The pipeline's folder (with the file it wrote) is gone.
    assert fake_pipeline.out_dirs and not fake_pipeline.out_dirs[0].exists()
    # The cancelled run holds no lock: the next run may start.
    assert training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL).status == "succeeded"


def test_the_real_pipeline_stops_at_its_next_progress_report(colour_photos, weights_path, tmp_path, monkeypatch):
    """No stand-in: the torch pipeline passes the cancellation through and leaves no files behind."""
    import tempfile

    from training.runs import training_run_cancel_request

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    stages, folders = [], []

    def on_progress(run):
        stages.append(run.stage)
        if len(stages) == 1:
            folders.extend((tmp_path / "tmp").glob("training-run-*"))
            training_run_cancel_request(runs=[run])

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL, on_progress=on_progress)

    assert run.status == TrainingRun.Status.CANCELLED and stages[0] == "decide"
    assert "export" not in stages and ModelVersion.objects.count() == 0
    assert len(folders) == 1 and not folders[0].exists()  # the run's folder (torch keeps its own caches)


def test_cancelling_a_finished_run_changes_nothing(colour_photos, fake_pipeline, admin_client):
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    admin_client.post(
        reverse("admin:training_trainingrun_changelist"), {"action": "cancel_runs", "_selected_action": [run.pk]}
    )
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and not run.cancel_requested


def test_the_strategy_override_is_dispatched_and_recorded(colour_photos, fake_pipeline):
    TrainingPolicy.objects.create(project=colour_photos, strategy_override="fine_tune", note="lots of new photos")

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.decision["override"] == "fine_tune" and run.decision["override_note"] == "lots of new photos"
    assert run.decision["strategy"] == "fine_tune" and "override" in run.decision["reason"]
    assert fake_pipeline.calls[0]["strategy"] == "fine_tune"
    assert run.decision["balance"]["train"]["ratio"] > 0
    # The feature cache is keyed by content hash.
    call = fake_pipeline.calls[0]
    assert {s.key for s in call["samples"]} == {e["sha256"] for e in run.snapshot.manifest["photos"]}
    assert isinstance(call["feature_cache"], StorageFeatureCache)


def test_the_size_threshold_is_a_setting(colour_photos, fake_pipeline, settings):
    settings.PLATFORM_STRATEGY_LARGE_PER_LABEL = 2  # every label has at least 2 training photos
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    assert run.decision["size"] == "large" and run.decision["thresholds"]["large_per_label"] == 2
    assert run.decision["strategy"] == "fine_tune"  # large and similar


def test_without_a_policy_the_override_is_none(colour_photos, fake_pipeline):
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    assert run.decision["override"] is None and fake_pipeline.calls[0]["strategy"] is None
    assert run.decision["strategy"] == run.decision["rule_choice"] == "linear_probe"  # small, similar


def test_the_admin_run_page_shows_progress_decision_gate_and_pictures(colour_photos, fake_pipeline, admin_client):
    release(colour_photos, labels=["ants", "bees"])
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    page = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "100%" in html and "&quot;strategy&quot;: &quot;linear_probe&quot;" in html
    assert "release v1" in html and "passed" in html
    confusion_url = reverse("admin:training_trainingrun_confusion", args=[run.pk])
    curve_url = reverse("admin:training_trainingrun_curve", args=[run.pk])
    assert confusion_url in html and curve_url in html
    for url in (confusion_url, curve_url):
        response = admin_client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response.content.startswith(b"\x89PNG")

    assert admin_client.get(reverse("admin:training_trainingpolicy_add")).status_code == 200
    assert admin_client.get(reverse("admin:training_trainingrun_changelist")).status_code == 200


def test_the_run_page_leads_with_the_outcome_and_pictures_and_is_a_read_only_record(
    colour_photos, fake_pipeline, admin_client
):
    release(colour_photos, labels=["ants", "bees"])
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    # The decision record's candidates (added by the strategy selection), one of them skipped.
    run.decision = {**run.decision, "candidates": [
        {"strategy": "linear_probe", "cv_accuracy": {"value": 0.91, "successes": 91, "n": 100,
         "ci95": [0.85, 0.95]}, "seconds": 1.5, "skipped": None, "params": {}},
        {"strategy": "fine_tune", "cv_accuracy": None, "seconds": 0.0,
         "skipped": "over the nightly budget", "params": {}},
    ]}
    run.save(update_fields=["decision"])

    page = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    # The outcome first, with the holdout accuracy's n and interval; the JSON folded under the pictures.
    count = run.metrics["count"]
    assert html.index("Published version 2") < html.index("candidates.png") < html.index("<details>")
    assert f"holdout accuracy <b>1.000</b> (95% CI {run.metrics['accuracy_ci95'][0]:.3f}-1.000, n={count})" in html
    assert "0.910" in html and "95% CI 0.850-0.950" in html and "over the nightly budget" in html
    assert "paired" in html and "p=1" in html  # the gate's paired comparison
    for name in ("candidates", "confusion", "curve"):
        url = reverse(f"admin:training_trainingrun_{name}", args=[run.pk])
        assert url in html
        response = admin_client.get(url)
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    # A record: no Save, no Delete, and a POST changes nothing.
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert reverse("admin:training_trainingrun_delete", args=[run.pk]) not in html
    assert admin_client.post(reverse("admin:training_trainingrun_change", args=[run.pk]),
                             {"message": "edited"}).status_code == 403
    assert admin_client.get(reverse("admin:training_trainingrun_delete", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.message == "Published version 2."
    # The cancel action stays on the list.
    changelist = admin_client.get(reverse("admin:training_trainingrun_changelist")).content.decode()
    assert "cancel_runs" in changelist and "delete_selected" not in changelist


def test_run_pictures_need_an_admin(colour_photos, fake_pipeline, client):
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    response = client.get(reverse("admin:training_trainingrun_confusion", args=[run.pk]))
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_pictures_are_drawn_with_pillow_without_matplotlib(monkeypatch):
    import sys

    from training import charts

    monkeypatch.setitem(sys.modules, "training.ml.plots", None)  # import fails, as without matplotlib
    assert charts.confusion_png(confusion=[[3, 1], [0, 4]], labels=["ants", "bees"]).startswith(b"\x89PNG")
    history = [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}, {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7}]
    assert charts.curve_png(history=history).startswith(b"\x89PNG")


def test_the_feature_cache_stores_small_npy_files_by_namespace_and_hash():
    cache = StorageFeatureCache()
    key = "abc123:" + "e" * 64
    assert cache.get(key) is None and key not in cache
    cache[key] = np.arange(4, dtype=np.float64)
    cache[key] = np.arange(4, dtype=np.float64) * 2  # overwrites, never renames
    assert default_storage.exists(f"features/abc123/{'e' * 64}.npy")
    assert cache[key].dtype == np.float32 and cache[key].tolist() == [0, 2, 4, 6]
    assert list(cache) == [key] and len(cache) == 1
    with pytest.raises(KeyError):
        cache["../../etc:passwd"]
    del cache[key]
    assert key not in cache and len(cache) == 0
    lower = "abc123:lower6x2:" + "f" * 64  # lower-layer features of the same weights
    cache[lower] = np.ones(3)
    assert list(cache) == [lower] and cache[lower].tolist() == [1, 1, 1]
    with pytest.raises(KeyError):
        cache["abc123:..:" + "f" * 64]


@pytest.mark.slow
def test_a_second_run_computes_features_only_for_new_photos(project, staff, hymenoptera, weights_path, tmp_path,
                                                           settings, fake_compression):
    """The real pipeline, twice: the second night pays a forward pass only for the photos added since."""
    from submissions.services import photo_import_folder

    settings.PLATFORM_HOLDOUT_PERCENT = 40
    settings.PLATFORM_MIN_PHOTOS_PER_LABEL = 1
    settings.PLATFORM_GATE_TOLERANCE_OVERALL = settings.PLATFORM_GATE_TOLERANCE_PER_LABEL = 1.0  # not tested here

    def add(first: int, last: int) -> None:
        folder = tmp_path / f"seed-{first}"
        for label in ("ants", "bees"):
            (folder / label).mkdir(parents=True)
            for path in sorted((hymenoptera / "train" / label).glob("*.jpg"))[first:last]:
                shutil.copy(path, folder / label / path.name)
        photo_import_folder(project=project, folder=folder, moderator=staff)

    # The linear probe, whatever a similarity measured on 8 photos would say.
    TrainingPolicy.objects.create(project=project, strategy_override="linear_probe")
    add(0, 6)
    first = training_run_execute(project=project, trigger=TrainingRun.Trigger.MANUAL)
    assert first.status == TrainingRun.Status.SUCCEEDED, first.message
    features = first.config["pipeline"]["features"]
    assert features["computed"] == features["total"] == first.snapshot.photo_count

    add(6, 8)
    second = training_run_execute(project=project, trigger=TrainingRun.Trigger.MANUAL)
    assert second.status == TrainingRun.Status.SUCCEEDED, second.message
    features = second.config["pipeline"]["features"]
    new = second.snapshot.photo_count - first.snapshot.photo_count
    assert new == 4 and features["computed"] == new and features["cached"] == first.snapshot.photo_count
    # Nor does the second night trace the network again: only the head is swapped in.
    assert first.config["pipeline"]["export"] == {"reused_backbone_export": False}
    assert second.config["pipeline"]["export"] == {"reused_backbone_export": True}
    namespace = second.config["pipeline"]["features_namespace"]
    assert len(default_storage.listdir(f"features/{namespace}")[1]) == second.snapshot.photo_count
