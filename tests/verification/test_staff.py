"""Staff keep the last word: override, reverse (points back through the ledger), suspicious pairs."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from leaderboards.models import PointsEntry, ScoreTotal
from leaderboards.services import photo_points
from submissions.models import Photo
from tests.factories import UserFactory
from tests.moderation.conftest import make_photo
from tests.verification.conftest import client_for, vote
from verification.models import VerificationDecision, VerificationTask
from verification.selectors import pair_list_suspicious

pytestmark = pytest.mark.django_db


def _net(user) -> Decimal:
    return PointsEntry.objects.filter(volunteer=user).aggregate(net=Sum("points"))["net"] or Decimal(0)


def _board(project, user) -> Decimal:
    return ScoreTotal.objects.get(project=project, volunteer=user, period="all").points


@pytest.fixture
def decided(project, pending, make_voter):
    voters = [make_voter() for _ in range(3)]
    for voter in voters:
        vote(voter, project, "yes")
    pending.refresh_from_db()
    assert pending.status == Photo.Status.APPROVED
    return VerificationDecision.objects.get(photo=pending), voters


def test_reverse_restores_pending_and_takes_every_point_back(project, pending, uploader, decided, staff_api, staff):
    decision, voters = decided
    assert _net(uploader) > 0 and all(_net(v) == 2 for v in voters)
    response = staff_api.post(f"/api/v1/verification/decisions/{decision.pk}/reverse/", {"reason": "blurry"})
    assert response.status_code == 200 and response.json()["reversed_at"]
    pending.refresh_from_db()
    assert pending.status == Photo.Status.PENDING
    assert _net(uploader) == 0 and _board(project, uploader) == 0
    assert all(_net(v) == 0 and _board(project, v) == 0 for v in voters)
    # Nothing deleted: the ledger shows the award and its reversal.
    assert PointsEntry.objects.filter(kind="revocation").count() == 4
    decision.refresh_from_db()
    assert (decision.reversed_by, decision.reverse_reason) == (staff, "blurry")
    again = staff_api.post(f"/api/v1/verification/decisions/{decision.pk}/reverse/", {})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_reversed"
    # The photo now waits for staff: not offered again, and votes cannot decide it.
    late = UserFactory()
    make_photo(project=project, volunteer=late, status=Photo.Status.APPROVED, color=(5, 5, 5))
    next_task = client_for(late).get(f"/api/v1/verification/next/?project={project.slug}")
    assert next_task.status_code == 204 or VerificationTask.objects.get(public_id=next_task.json()["id"]).is_gold


def test_staff_override_of_an_automatic_decision_withdraws_the_voters_points(project, pending, uploader, decided,
                                                                               staff_api):
    decision, voters = decided
    response = staff_api.post(f"/api/v1/moderation/photos/{pending.public_id}/decision/",
                              {"decision": "reject", "reason": "Actually a wasp"})
    assert response.status_code == 200
    decision.refresh_from_db()
    assert decision.reversed_at is not None and "overridden" in decision.reverse_reason
    assert _net(uploader) == 0 and all(_net(v) == 0 for v in voters)


def test_staff_decide_pending_photos_whatever_the_votes(project, pending, make_voter, staff_api):
    vote(make_voter(), project, "no")
    response = staff_api.post(f"/api/v1/moderation/photos/{pending.public_id}/decision/", {"decision": "approve"})
    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == Photo.Status.APPROVED and not VerificationDecision.objects.exists()


def test_reverse_is_staff_only(decided, volunteer_api):
    decision, _ = decided
    assert volunteer_api.post(f"/api/v1/verification/decisions/{decision.pk}/reverse/", {}).status_code == 403


def test_pairs_verifying_each_other_far_above_chance_are_flagged(project, staff_api):
    crowd = [UserFactory() for _ in range(10)]
    photos = {user.pk: [make_photo(project=project, volunteer=user, color=(i, j, 7)) for j in range(6)]
              for i, user in enumerate(crowd)}
    a, b = crowd[0], crowd[1]

    def cast(voter, photo):
        VerificationTask.objects.create(project=project, volunteer=voter, photo=photo, label_asked=photo.label,
                                        answer="yes", answered_at=timezone.now())

    for photo in photos[b.pk]:
        cast(a, photo)  # a only ever verifies b, and b only a
    for photo in photos[a.pk]:
        cast(b, photo)
    for index, voter in enumerate(crowd[2:]):  # everyone else spreads their votes
        for owner in crowd[2:]:
            if owner != voter:
                cast(voter, photos[owner.pk][index % 6])
    pairs = pair_list_suspicious(project_id=project.pk)
    assert [(p.volunteer_a, p.volunteer_b) for p in pairs] == [(a.pk, b.pk)]
    assert pairs[0].observed == 12 and pairs[0].ratio > 3
    listed = staff_api.get(f"/api/v1/verification/pairs/?project={project.slug}")
    assert listed.status_code == 200 and listed.json()[0]["observed"] == 12


def test_points_are_whole_and_a_photo_the_model_got_wrong_earns_a_bonus_with_its_reason(
    project, uploader, staff, settings
):
    photo = make_photo(project=project, volunteer=uploader, model_confidence=0.25)
    label = photo.label
    label.target_count = 30
    label.save()
    for index in range(1):  # one approved before: 10 x (1 + 29/30) = 19.67 -> 20
        make_photo(project=project, status=Photo.Status.APPROVED, color=(index, 1, 1))
    assert photo_points(photo=photo) == 20
    staff_api_client = client_for(staff)
    staff_api_client.post(f"/api/v1/moderation/photos/{photo.public_id}/decision/", {"decision": "approve"})
    bonus = PointsEntry.objects.get(photo=photo, kind="bonus")
    assert bonus.points == settings.PLATFORM_MODEL_MISS_BONUS
    assert bonus.reason == (
        "Bonus: the model thought this was bees (75% sure), and it is ants: exactly the photo it needs."
    )
    assert _board(project, uploader) == 20 + settings.PLATFORM_MODEL_MISS_BONUS
    assert all(entry.points == int(entry.points) for entry in PointsEntry.objects.all())
    # A photo the model got right earns no bonus; rejecting takes the bonus back with the rest.
    sure = make_photo(project=project, volunteer=uploader, model_confidence=0.9, color=(9, 9, 9))
    staff_api_client.post(f"/api/v1/moderation/photos/{sure.public_id}/decision/", {"decision": "approve"})
    assert not PointsEntry.objects.filter(photo=sure, kind="bonus").exists()
    staff_api_client.post(f"/api/v1/moderation/photos/{photo.public_id}/decision/",
                          {"decision": "reject", "reason": "wasp"})
    assert PointsEntry.objects.filter(photo=photo).aggregate(net=Sum("points"))["net"] == 0


def _upload(user, challenge, seed, capture):
    """A real upload through the API (noise: no near duplicate of the others), its on-commit work run."""
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.effect_noise((96, 64), 60 + seed).convert("RGB").save(image, format="JPEG")
    image.seek(0)
    image.name = "photo.jpg"
    with capture(execute=True):
        response = client_for(user).post("/api/v1/photos/", {"challenge": challenge.pk, "label": "ants",
                                                             "image": image}, format="multipart")
    assert response.status_code == 201, response.content
    return Photo.objects.get(public_id=response.json()["id"])


def test_proven_uploaders_skip_verification_only_when_switched_on(project, challenge, make_voter, settings,
                                                                  django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    settings.PLATFORM_VERIFY_TRUSTED_ACCURACY = 0.75  # Beta(13, 1): 5% quantile 0.79
    proven, newcomer = make_voter(right=12), make_voter(right=0)
    assert _upload(proven, challenge, 1, capture).status == Photo.Status.PENDING  # off by default
    settings.PLATFORM_VERIFY_TRUSTED_UPLOADS = True
    trusted = _upload(proven, challenge, 2, capture)
    trusted.refresh_from_db()
    assert trusted.status == Photo.Status.APPROVED
    decision = VerificationDecision.objects.get(photo=trusted)
    assert decision.votes[0]["trusted_uploader"] == proven.pk
    untrusted = _upload(newcomer, challenge, 3, capture)
    untrusted.refresh_from_db()
    assert untrusted.status == Photo.Status.PENDING


def test_the_volunteer_sees_the_bonus_reason_on_their_photos(project, uploader, staff, client):
    photo = make_photo(project=project, volunteer=uploader, model_confidence=0.1)
    client_for(staff).post(f"/api/v1/moderation/photos/{photo.public_id}/decision/", {"decision": "approve"})
    listed = client_for(uploader).get("/api/v1/photos/").json()["results"][0]
    assert listed["bonus"].startswith("Bonus: the model thought this was bees (90% sure)")
    client.force_login(uploader)
    assert "exactly the photo it needs" in client.get("/me/photos/").content.decode()


def test_admin_lists_decisions_warns_of_pairs_and_reverses(project, decided, admin_client, monkeypatch):
    from verification import admin as verification_admin
    from verification.selectors import SuspiciousPair

    decision, voters = decided
    pair = SuspiciousPair(volunteer_a=voters[0].pk, volunteer_b=voters[1].pk, observed=9, expected=1.5, ratio=6.0)
    monkeypatch.setattr(verification_admin, "pair_list_suspicious", lambda project_id: [pair])
    url = "/admin/verification/verificationdecision/"
    listed = admin_client.get(url)
    assert listed.status_code == 200
    assert f"volunteers {voters[0].pk} and {voters[1].pk} verified each other 9 times" in listed.content.decode()
    done = admin_client.post(url, {"action": "reverse", "_selected_action": [decision.pk]}, follow=True)
    assert "Reversed 1 decision(s)." in done.content.decode()
    decision.refresh_from_db()
    decision.photo.refresh_from_db()
    assert decision.reversed_at is not None and decision.photo.status == Photo.Status.PENDING
