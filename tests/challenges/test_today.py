"""Today's challenge: the scheduled one, or one generated from need."""
import datetime as dt

import pytest

from challenges.models import Challenge

pytestmark = pytest.mark.django_db


def test_scheduled_challenge_is_served(api, challenge):
    body = api.get("/api/v1/challenges/today/").json()
    assert body["id"] == challenge.pk and sorted(body["labels"]) == ["ants", "bees"]
    assert {label["name"]: label["approved_count"] for label in body["progress"]} == {"ants": 0, "bees": 0}


def test_without_a_schedule_the_neediest_label_is_asked_for(api, project):
    ants = project.labels.get(name="ants")
    ants.target_count = 5
    ants.save()
    body = api.get("/api/v1/challenges/today/", {"project": "ants-bees"}).json()
    assert body["labels"] == ["bees"]
    assert "bees has 0 of 30 approved photos" in body["generated_reason"]
    # Asking again returns the same stored challenge.
    assert api.get("/api/v1/challenges/today/").json()["id"] == body["id"]
    assert Challenge.objects.count() == 1


def test_the_day_follows_the_project_time_zone(project):
    from challenges.selectors import project_today

    project.time_zone = "Pacific/Auckland"
    now = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)  # already the 23rd in Auckland
    assert project_today(project=project, now=now) == dt.date(2026, 11, 23)


def test_unknown_project_is_404_json(api, project):
    response = api.get("/api/v1/challenges/today/", {"project": "wasps"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "project_not_found"
