"""Who gets which task: never one's own photo, never twice, only one's projects; gold stays hidden."""
from __future__ import annotations

import uuid

import pytest
from django.test import Client

from leaderboards.models import PointsEntry
from submissions.models import Photo
from tests.factories import LabelFactory, ProjectFactory, UserFactory
from tests.moderation.conftest import make_photo
from tests.verification.conftest import client_for, vote
from verification.models import VerificationTask

pytestmark = pytest.mark.django_db


def _next(user, project):
    return client_for(user).get(f"/api/v1/verification/next/?project={project.slug}")


def test_own_photos_are_never_offered_and_a_vote_on_them_is_refused(project, uploader, pending):
    assert _next(uploader, project).status_code == 204  # the only pending photo is their own
    response = client_for(uploader).post(f"/api/v1/verification/{pending.public_id}/vote/", {"answer": "yes"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_same_photo_is_never_asked_twice_and_a_second_answer_is_refused(project, pending, make_voter):
    voter = make_voter(right=1)
    task = _next(voter, project).json()
    assert _next(voter, project).json()["id"] == task["id"]  # unanswered: the same task again
    client = client_for(voter)
    assert client.post(f"/api/v1/verification/{task['id']}/vote/", {"answer": "yes"}).status_code == 200
    again = client.post(f"/api/v1/verification/{task['id']}/vote/", {"answer": "no"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_voted"
    following = _next(voter, project).json()  # nothing else pending: gold fills in, never the same photo
    assert VerificationTask.objects.get(public_id=following["id"]).photo_id != pending.pk
    assert VerificationTask.objects.get(public_id=task["id"]).answer == "yes"


def test_someone_elses_task_and_bad_answers_are_refused(project, pending, make_voter):
    owner, other = make_voter(), make_voter()
    task = _next(owner, project).json()
    stolen = client_for(other).post(f"/api/v1/verification/{task['id']}/vote/", {"answer": "yes"})
    assert stolen.status_code == 404
    bad = client_for(owner).post(f"/api/v1/verification/{task['id']}/vote/", {"answer": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    assert client_for(owner).post(f"/api/v1/verification/{uuid.uuid4()}/vote/", {"answer": "yes"}).status_code == 404


def test_only_projects_one_takes_part_in(project, pending, make_voter):
    other = ProjectFactory(slug="birds")
    LabelFactory(project=other, name="owls")
    voter = make_voter()
    refused = _next(voter, other)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_taking_part"
    assert _next(voter, ProjectFactory.build(slug="nope")).status_code == 404
    missing = client_for(voter).get("/api/v1/verification/next/")
    assert missing.status_code == 400 and "project" in missing.json()["error"]["message"]


def test_the_task_shows_the_photo_to_its_verifier_only_and_hides_the_uploader(project, pending, make_voter, client):
    voter = make_voter()
    task = _next(voter, project).json()
    assert set(task) == {"id", "project", "label", "question", "image_url"}
    assert task["question"] == "Is this ants?" and str(pending.public_id) not in str(task)
    path = task["image_url"].removeprefix("http://testserver")
    client.force_login(voter)
    assert client.get(path).status_code == 200
    client.force_login(make_voter())
    assert client.get(path).status_code == 404
    client.force_login(UserFactory(is_staff=False))
    assert client.get(f"/photos/{pending.public_id}/display").status_code == 404


def test_gold_is_mixed_in_unannounced_with_wrong_labels_and_scores_the_voter(project, gold, settings):
    settings.PLATFORM_VERIFY_GOLD_SHARE = 1.0
    voter = UserFactory()
    make_photo(project=project, volunteer=voter, status=Photo.Status.APPROVED)
    pending_task_keys = None
    asked_wrong = 0
    for _ in range(len(gold)):
        response = _next(voter, project)
        body = response.json()
        task = VerificationTask.objects.get(public_id=body["id"])
        assert task.is_gold
        pending_task_keys = pending_task_keys or set(body)
        assert set(body) == pending_task_keys  # same shape as any task; no "gold" anywhere
        assert "gold" not in response.content.decode().lower()
        truth = task.label_asked_id == task.photo.label_id
        asked_wrong += not truth
        client_for(voter).post(f"/api/v1/verification/{body['id']}/vote/", {"answer": "yes"})
    # Always answering "yes" is right only when the asked label is the photo's: chance, not skill.
    assert 0 < asked_wrong < len(gold)
    tasks = VerificationTask.objects.filter(volunteer=voter, is_gold=True)
    assert tasks.filter(correct=False).count() == asked_wrong


def test_gold_share_controls_how_many_tasks_are_gold(project, gold, settings):
    settings.PLATFORM_VERIFY_GOLD_SHARE = 0.0
    voter = UserFactory()
    make_photo(project=project, volunteer=voter, status=Photo.Status.APPROVED)
    for index in range(4):
        make_photo(project=project, volunteer=UserFactory(), color=(index, 9, 9))
    for _ in range(4):
        body = _next(voter, project).json()
        assert not VerificationTask.objects.get(public_id=body["id"]).is_gold
        client_for(voter).post(f"/api/v1/verification/{body['id']}/vote/", {"answer": "yes"})
    # Nothing pending left: gold fills in rather than leaving a volunteer idle.
    assert VerificationTask.objects.get(public_id=_next(voter, project).json()["id"]).is_gold


def test_gold_votes_earn_points_only_up_to_their_share(project, gold, settings):
    settings.PLATFORM_VERIFY_GOLD_SHARE = 1.0
    voter = UserFactory()
    make_photo(project=project, volunteer=voter, status=Photo.Status.APPROVED)
    for _ in range(6):
        body = _next(voter, project).json()
        task = VerificationTask.objects.get(public_id=body["id"])
        right = "yes" if task.label_asked_id == task.photo.label_id else "no"
        client_for(voter).post(f"/api/v1/verification/{body['id']}/vote/", {"answer": right})
    assert PointsEntry.objects.filter(volunteer=voter, kind="verification").count() == 6
    settings.PLATFORM_VERIFY_GOLD_SHARE = 0.2  # now gold may pay for at most a fifth of the answers
    body = _next(voter, project).json()
    task = VerificationTask.objects.get(public_id=body["id"])
    right = "yes" if task.label_asked_id == task.photo.label_id else "no"
    client_for(voter).post(f"/api/v1/verification/{body['id']}/vote/", {"answer": right})
    assert PointsEntry.objects.filter(volunteer=voter, kind="verification").count() == 6


def test_votes_are_rate_limited_with_retry_after(project, make_voter, settings):
    settings.PLATFORM_VERIFY_RATE = "2/min"
    voter = make_voter()
    for index in range(3):
        make_photo(project=project, volunteer=UserFactory(), color=(index, 50, 50))
    assert vote(voter, project, "yes").status_code == 200
    assert vote(voter, project, "unsure").status_code == 200
    limited = vote(voter, project, "yes")
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) > 0 and limited.json()["error"]["code"] == "throttled"


def test_the_page_asks_one_question_with_three_buttons_and_needs_csrf(project, pending, make_voter):
    voter = make_voter()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(voter)
    page = browser.get("/verify/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Is this ants?" in html and html.count('name="answer"') == 3 and "gold" not in html.lower()
    task = VerificationTask.objects.get(volunteer=voter, answered_at__isnull=True)
    assert browser.post(f"/verify/{task.public_id}/", {"answer": "yes"}).status_code == 403  # no token
    token = page.cookies["csrftoken"].value
    answered = browser.post(f"/verify/{task.public_id}/", {"answer": "yes", "csrfmiddlewaretoken": token})
    assert answered.status_code == 302 and answered["Location"] == "/verify/?project=ants-bees"
    task.refresh_from_db()
    assert task.answer == "yes"


def test_my_impact_page_shows_my_accuracy_on_gold_with_its_n_and_interval(project, make_voter, client):
    voter = make_voter(right=9, wrong=1)
    client.force_login(voter)
    page = client.get("/me/impact/").content.decode()
    # 9 of 10: Wilson 95% interval 0.60-0.98.
    assert "My verification accuracy" in page
    assert "Right on 9 of 10 check photos" in page and "0.60 to 0.98" in page
    client.force_login(UserFactory())
    assert "My verification accuracy" not in client.get("/me/impact/").content.decode()
