"""A volunteer sees how many of their photos each published model version used."""
import datetime as dt

import pytest

from leaderboards.selectors import volunteer_impact
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _publish(project, version, entries):
    from training.models import DatasetSnapshot, ModelVersion, TrainingRun

    snapshot = DatasetSnapshot.objects.create(
        project=project, manifest_sha256=f"{version:064d}", manifest={"photos": entries}, label_counts={},
        photo_count=len(entries),
    )
    run = TrainingRun.objects.create(
        project=project, trigger="manual", status="succeeded", night=dt.date(2026, 1, version), snapshot=snapshot
    )
    return ModelVersion.objects.create(
        project=project, version=version, run=run, snapshot=snapshot, labels=["ants", "bees"], preprocessing={},
        metrics={},
    )


def _entry(photo, split):
    return {"photo": str(photo.public_id), "sha256": photo.sha256, "label": photo.label.name, "split": split}


def test_impact_counts_my_photos_per_version_in_two_queries(
    project, volunteer, send_photo, approve, volunteer_api, django_assert_num_queries
):
    mine = [approve(send_photo(volunteer, project)) for _ in range(3)]
    other = approve(send_photo(UserFactory(), project))
    _publish(project, 1, [_entry(mine[0], "train"), _entry(other, "train")])
    _publish(project, 2, [_entry(mine[0], "train"), _entry(mine[1], "train"), _entry(mine[2], "holdout")])
    with django_assert_num_queries(2):
        rows = volunteer_impact(volunteer=volunteer)
    assert [(r.model, r.version, r.photos_in_training, r.photos_in_holdout) for r in rows] == [
        ("ants-bees", 2, 2, 1), ("ants-bees", 1, 1, 0),
    ]
    body = volunteer_api.get("/api/v1/me/impact/").json()
    assert body[0]["model"] == "ants-bees" and body[0]["photos_in_training"] == 2 and "created_at" in body[0]


def test_impact_is_empty_without_photos_and_needs_login(volunteer_api, api):
    assert volunteer_api.get("/api/v1/me/impact/").json() == []
    assert api.get("/api/v1/me/impact/").status_code in (401, 403)
