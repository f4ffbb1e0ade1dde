"""The nightly job hands measured selection its settings and the near-duplicate groups; train_now shows it."""
import pytest

from submissions.models import Photo
from training.management.commands.train_now import candidates_table
from training.models import TrainingRun
from training.nightly import training_run_execute

pytestmark = pytest.mark.django_db


def test_the_job_passes_the_selection_settings_and_near_duplicate_groups(colour_photos, fake_pipeline, settings):
    settings.PLATFORM_TRAINING_BUDGET_MINUTES = 7.5
    settings.PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL = 40
    settings.PLATFORM_STRATEGY_CV_FOLDS = 3
    settings.PLATFORM_STRATEGY_FINE_TUNE_CACHE_MB = 512
    ants = list(Photo.objects.filter(project=colour_photos, label__name="ants").order_by("id"))
    ants[1].near_duplicate_of = ants[0]
    ants[1].save(update_fields=["near_duplicate_of"])

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    call = fake_pipeline.calls[0]
    selection = call["selection"]
    assert (selection.budget_minutes, selection.fine_tune_min_per_label, selection.folds) == (7.5, 40, 3)
    assert selection.fine_tune_cache_mb == 512
    group = {s.key: s.group for s in call["samples"]}
    # A near duplicate is grouped with its root, so cross-validation keeps them in one fold.
    assert group[ants[1].sha256] == group[ants[0].sha256] == ants[0].sha256
    others = [p for p in Photo.objects.filter(project=colour_photos) if p.pk not in (ants[0].pk, ants[1].pk)]
    assert all(group[p.sha256] == p.sha256 for p in others if p.sha256 in group)


def test_train_now_table_shows_every_candidate_with_its_interval_and_why():
    decision = {
        "rule_choice": "linear_probe",
        "winner": "fine_tune",
        "why": "fine_tune beats the rule's choice linear_probe beyond the noise",
        "candidates": [
            {"strategy": "linear_probe", "cv_accuracy": {"value": 0.8, "n": 100, "ci95": [0.711, 0.867]},
             "seconds": 1.2, "skipped": None, "params": {}},
            {"strategy": "fine_tune", "cv_accuracy": {"value": 0.93, "n": 100, "ci95": [0.862, 0.966]},
             "seconds": 250.0, "skipped": None, "params": {}},
            {"strategy": "from_scratch", "cv_accuracy": None, "seconds": 0.0,
             "skipped": "over budget: estimated 9000 s", "params": {}},
        ],
    }
    table = candidates_table(decision)
    lines = table.splitlines()
    assert "0.800 (0.711-0.867, n=100)" in lines[2] and "WINNER" not in lines[2]
    assert "0.930 (0.862-0.966, n=100)" in lines[3] and lines[3].endswith("WINNER")
    assert "skipped: over budget: estimated 9000 s" in lines[4]
    assert "rule's choice: linear_probe; shipped: fine_tune" in table and "beyond the noise" in table
