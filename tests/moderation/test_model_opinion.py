"""What the volunteer is told about a photo: the current model's opinion and what happens next."""
import datetime as dt

import pytest
from django.utils import timezone

from submissions.opinion import photo_model_opinion, photo_next_step, photo_review_time
from tests.moderation.test_scoring import BLUE, RED, publish, red_blue_classifier
from tests.pages.builders import make_photo
from training import scoring
from training.tasks import photo_score_with_current_model

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_sessions():
    scoring.SESSIONS.clear()
    yield
    scoring.SESSIONS.clear()


def test_the_scoring_keeps_the_models_top_label_and_the_api_words_it(project, photo_factory, volunteer_api):
    publish(project, 1, red_blue_classifier())
    red_ant, blue_ant = photo_factory(label="ants", color=RED), photo_factory(label="ants", color=BLUE)
    url = f"/api/v1/photos/{red_ant.public_id}/"
    assert volunteer_api.get(url).json()["model_opinion"] is None  # not scored yet: the page keeps polling

    photo_score_with_current_model(red_ant.pk)
    photo_score_with_current_model(blue_ant.pk)

    agrees = volunteer_api.get(url).json()["model_opinion"]
    assert agrees["label"] == "ants" and agrees["confidence"] > 0.99 and agrees["agrees"] and not agrees["unsure"]
    assert agrees["message"].startswith("The model sees ants (")
    disagrees = volunteer_api.get(f"/api/v1/photos/{blue_ant.public_id}/").json()["model_opinion"]
    assert disagrees["label"] == "bees" and not disagrees["agrees"]
    assert "The model thought this was bees" in disagrees["message"] and "learns most from" in disagrees["message"]


@pytest.mark.parametrize(
    ("top", "confidence", "expected"),
    [
        ("ants", 0.91, "The model sees ants (91%)."),
        ("ants", 0.69, "The model is unsure (maybe ants, 69%): exactly the photo it needs."),
        ("bees", 0.55, "The model thought this was bees (55%)"),
    ],
)
def test_the_opinion_says_sure_unsure_or_disagrees(project, photo_factory, top, confidence, expected):
    photo = photo_factory(label="ants", model_top_label=top, model_top_confidence=confidence)
    assert photo_model_opinion(photo=photo)["message"].startswith(expected)


def test_the_unsure_threshold_is_a_setting(project, photo_factory, settings):
    photo = photo_factory(label="ants", model_top_label="ants", model_top_confidence=0.91)
    settings.PLATFORM_MODEL_UNSURE_BELOW = 0.95
    assert photo_model_opinion(photo=photo)["unsure"]


def test_next_step_says_who_checks_when_points_arrive_and_how_long_it_usually_takes(project, photo_factory):
    pending = photo_factory(label="ants")
    assert photo_review_time(project_id=project.pk) is None  # fewer than 5 decisions: no figure
    assert "points arrive when it is approved" in photo_next_step(photo=pending)
    now = timezone.now()
    for hours in (1, 2, 3, 4, 5):
        make_photo(project=project, status="approved", moderated_at=now, created_at=now - dt.timedelta(hours=hours))
    review = photo_review_time(project_id=project.pk)
    assert review.n == 5 and review.median == dt.timedelta(hours=3)
    assert "usually takes about 3 hours (median of the last 5 decisions)" in photo_next_step(photo=pending, review_time=review)


def test_my_photos_page_shows_the_next_step_and_the_opinion(project, photo_factory, client, volunteer):
    photo_factory(label="ants", model_top_label="bees", model_top_confidence=0.8)
    client.force_login(volunteer)
    page = client.get("/me/photos/").content.decode()
    assert "Waiting for a check" in page and "points arrive when it is approved" in page
    assert "The model thought this was bees (80%)" in page
