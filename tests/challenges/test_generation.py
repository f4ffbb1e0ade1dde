"""Without a schedule, today's challenge is generated from need: data, then recall, then confusion."""
import datetime as dt

import pytest

from challenges.services import challenge_get_or_generate_today
from training.models import DatasetSnapshot, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def labels_at_target(project):
    """Every label has reached its target (0): data is not the need any more."""
    project.labels.update(target_count=0)
    return project


def publish_metrics(project, number: int, metrics: dict) -> ModelVersion:
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project, manifest_sha256="0" * 64, defaults={"manifest": {}, "label_counts": {}, "photo_count": 0}
    )
    run = TrainingRun.objects.create(project=project, night=dt.date(2026, 11, number), trigger="manual",
                                     status="succeeded")
    return ModelVersion.objects.create(
        project=project, version=number, run=run, snapshot=snapshot, labels=["ants", "bees"],
        preprocessing={}, metrics=metrics,
    )


def evaluation(*, ants_recall: float, bees_recall: float, confusion: list[list[int]]) -> dict:
    def row(recall):
        return {"precision": 0.9, "recall": recall, "f1": 0.9, "support": 20}

    return {
        "accuracy": 0.9, "labels": ["ants", "bees"], "confusion": confusion,
        "per_label": {"ants": row(ants_recall), "bees": row(bees_recall)},
    }


def test_1_label_furthest_below_target(project):
    project.labels.filter(name="ants").update(target_count=5)
    publish_metrics(project, 1, evaluation(ants_recall=0.1, bees_recall=1.0, confusion=[[2, 18], [0, 20]]))
    challenge = challenge_get_or_generate_today(project=project)
    assert [label.name for label in challenge.labels.all()] == ["bees"]
    assert challenge.generated_reason == "bees has 0 of 30 approved photos, the furthest below its target."


def test_2_label_with_the_lowest_recall_of_the_latest_model(labels_at_target):
    project = labels_at_target
    publish_metrics(project, 1, evaluation(ants_recall=0.2, bees_recall=0.9, confusion=[[4, 16], [2, 18]]))
    publish_metrics(project, 2, evaluation(ants_recall=0.95, bees_recall=0.6, confusion=[[19, 1], [8, 12]]))
    challenge = challenge_get_or_generate_today(project=project)
    assert [label.name for label in challenge.labels.all()] == ["bees"]
    assert challenge.generated_reason == "bees has the lowest recall (60%) in model v2's evaluation."
    assert "bees" in challenge.title


def test_3_most_confused_pair_when_every_recall_is_good(labels_at_target, settings):
    project = labels_at_target
    settings.PLATFORM_CHALLENGE_RECALL_TARGET = 0.9
    publish_metrics(project, 1, evaluation(ants_recall=0.95, bees_recall=0.9, confusion=[[19, 1], [2, 18]]))
    challenge = challenge_get_or_generate_today(project=project)
    assert sorted(label.name for label in challenge.labels.all()) == ["ants", "bees"]
    assert challenge.generated_reason == (
        "model v1 mistook bees for ants 2 times on the holdout, its most confused pair."
    )
    assert "ants" in challenge.instructions and "bees" in challenge.instructions


def test_4_variety_when_nothing_stands_out(labels_at_target):
    project = labels_at_target
    publish_metrics(project, 1, evaluation(ants_recall=1.0, bees_recall=1.0, confusion=[[20, 0], [0, 20]]))
    challenge = challenge_get_or_generate_today(project=project)
    assert challenge.labels.count() == 1
    assert challenge.generated_reason.startswith("Every label reached its target")


def test_without_any_model_and_all_targets_met_it_still_asks_for_something(labels_at_target):
    challenge = challenge_get_or_generate_today(project=labels_at_target)
    assert challenge.labels.count() == 1 and challenge.generated_reason


def test_the_reason_is_shown_in_the_api(api, labels_at_target):
    publish_metrics(labels_at_target, 1, evaluation(ants_recall=0.5, bees_recall=1.0, confusion=[[10, 10], [0, 20]]))
    body = api.get("/api/v1/challenges/today/").json()
    assert body["labels"] == ["ants"] and "lowest recall (50%)" in body["generated_reason"]
