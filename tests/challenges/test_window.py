"""Opening hours: a challenge accepts uploads only on its day, between starts_at and ends_at (local)."""
import datetime as dt

import pytest

from challenges.services import challenge_assert_open
from common.errors import ValidationFailed
from tests.factories import ChallengeFactory

pytestmark = pytest.mark.django_db

AUCKLAND = "Pacific/Auckland"


@pytest.fixture
def evening(project):
    """18:00-21:00 on 2026-11-23 in Auckland (UTC+13 in November)."""
    project.time_zone = AUCKLAND
    project.save()
    challenge = ChallengeFactory(project=project, day=dt.date(2026, 11, 23), starts_at=dt.time(18), ends_at=dt.time(21))
    challenge.labels.set(project.labels.all())
    return challenge


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "now",
    [utc(2026, 11, 23, 5, 0), utc(2026, 11, 23, 7, 59, 59)],  # 18:00 and 20:59:59 in Auckland
)
def test_open_inside_the_window(evening, now):
    challenge_assert_open(challenge=evening, now=now)


@pytest.mark.parametrize(
    "now",
    [
        utc(2026, 11, 23, 4, 59),  # 17:59 local: not yet
        utc(2026, 11, 23, 8, 0),  # 21:00 local: closed
        utc(2026, 11, 24, 5, 30),  # the next day at 18:30 local
        utc(2026, 11, 22, 5, 30),  # the day before
    ],
)
def test_closed_outside_the_window(evening, now):
    with pytest.raises(ValidationFailed) as error:
        challenge_assert_open(challenge=evening, now=now)
    assert error.value.code == "challenge_closed"
    assert error.value.extra["opens_at"] == "2026-11-23T18:00:00+13:00"


def test_without_times_the_whole_local_day_is_open(project):
    project.time_zone = AUCKLAND
    project.save()
    challenge = ChallengeFactory(project=project, day=dt.date(2026, 11, 23))
    challenge_assert_open(challenge=challenge, now=utc(2026, 11, 22, 11, 0))  # 00:00 on the 23rd local
    challenge_assert_open(challenge=challenge, now=utc(2026, 11, 23, 10, 59))  # 23:59 local
    with pytest.raises(ValidationFailed):
        challenge_assert_open(challenge=challenge, now=utc(2026, 11, 23, 11, 0))  # midnight: the 24th


def test_api_shows_a_closed_challenge_as_not_open(api, project, monkeypatch):
    from django.utils import timezone

    from challenges.selectors import project_today

    now = timezone.now()
    today = project_today(project=project, now=now)
    challenge = ChallengeFactory(project=project, day=today, starts_at=dt.time(0, 0), ends_at=dt.time(0, 1))
    challenge.labels.set(project.labels.all())
    late = dt.datetime.combine(today, dt.time(12), tzinfo=dt.UTC)
    monkeypatch.setattr("challenges.api.timezone.now", lambda: late)
    body = api.get("/api/v1/challenges/today/").json()
    assert body["id"] == challenge.pk and body["is_open"] is False
    assert body["starts_at"] == "00:00:00" and body["ends_at"] == "00:01:00"

    monkeypatch.setattr("challenges.api.timezone.now", lambda: late.replace(hour=0, minute=0, second=30))
    assert api.get("/api/v1/challenges/today/").json()["is_open"] is True


def test_api_progress_has_both_milestones(api, project):
    ants = project.labels.get(name="ants")
    ants.target_count = 200
    ants.save()
    from tests.moderation.conftest import make_photo

    for _ in range(3):
        make_photo(project=project, label="ants", status="approved")
    make_photo(project=project, label="ants", status="pending")
    progress = {row["name"]: row for row in api.get("/api/v1/challenges/today/").json()["progress"]}
    assert progress["ants"] == {
        "name": "ants", "description": "", "target_count": 200, "example_photo_url": None, "approved_count": 3,
        "prototype_target": 30, "prototype_fraction": 0.1, "target_fraction": 0.015,
    }


def test_labels_carry_their_example_photo(api, project):
    from django.core.files.base import ContentFile

    from tests.conftest import jpeg_bytes

    ants = project.labels.get(name="ants")
    ants.example_photo.save("ant.jpg", ContentFile(jpeg_bytes()))
    labels = {label["name"]: label for label in api.get("/api/v1/projects/").json()[0]["labels"]}
    assert labels["bees"]["example_photo_url"] is None
    url = labels["ants"]["example_photo_url"]
    assert url == f"http://testserver/labels/{ants.pk}/example"
    response = api.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content)[:2] == b"\xff\xd8"
