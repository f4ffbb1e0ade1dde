"""Consensus decides, weighted by each voter's record on gold; the model votes but never alone."""
from __future__ import annotations

import pytest

from leaderboards.models import PointsEntry
from submissions.models import Photo
from tests.verification.conftest import client_for, vote
from verification.models import VerificationDecision, VerificationTask
from verification.selectors import model_vote, reputation_from_counts
from verification.services import photo_decide_if_consensus

pytestmark = pytest.mark.django_db


def test_weight_grows_with_gold_record_and_chance_or_worse_counts_nothing(settings):
    newcomer = reputation_from_counts(right=0, wrong=0)
    good = reputation_from_counts(right=12, wrong=0)
    decent = reputation_from_counts(right=8, wrong=2)
    clicker = reputation_from_counts(right=10, wrong=10)
    bad = reputation_from_counts(right=3, wrong=20)
    assert newcomer.weight == 0 and not newcomer.excluded  # no record yet: counts nothing, not banned
    assert good.weight > decent.weight > 0
    assert clicker.weight < 0.1  # a coin-flipper's mean is 0.5: log-odds ~0
    assert bad.excluded and bad.weight == 0  # 95% upper bound below PLATFORM_VERIFY_MIN_ACCURACY
    assert bad.upper < settings.PLATFORM_VERIFY_MIN_ACCURACY < good.upper


def test_enough_agreeing_weight_approves_through_moderation_with_points(project, pending, uploader, make_voter):
    voters = [make_voter(right=12) for _ in range(3)]  # 2.56 each: two are not enough (min 6)
    for voter in voters[:2]:
        assert vote(voter, project, "yes", expect_photo=pending).status_code == 200
        pending.refresh_from_db()
        assert pending.status == Photo.Status.PENDING
    vote(voters[2], project, "yes", expect_photo=pending)
    pending.refresh_from_db()
    assert pending.status == Photo.Status.APPROVED and pending.moderated_by is None
    decision = VerificationDecision.objects.get(photo=pending)
    assert decision.outcome == "approved" and decision.yes_weight == pytest.approx(3 * 2.5649, abs=1e-3)
    assert [v["volunteer"] for v in decision.votes] == [v.pk for v in voters]
    # The uploader's points come from the same ledger as for a staff approval; each voter gets whole points.
    assert PointsEntry.objects.get(photo=pending, volunteer=uploader).kind == "photo"
    for voter in voters:
        entry = PointsEntry.objects.get(volunteer=voter, kind="verification")
        assert entry.points == 2 and entry.points == int(entry.points)


def test_enough_no_weight_rejects_as_mislabelled_and_suggests_the_models_label(project, pending, make_voter):
    Photo.objects.filter(pk=pending.pk).update(model_confidence=0.3)  # not flagged (threshold 0.2)
    for _ in range(3):
        vote(make_voter(right=12), project, "no")
    pending.refresh_from_db()
    assert pending.status == Photo.Status.REJECTED
    assert "does not show ants" in pending.reject_reason
    decision = VerificationDecision.objects.get(photo=pending)
    assert (decision.outcome, decision.suggested_label) == ("rejected", "bees")
    assert decision.votes[-1]["model"] is True and decision.votes[-1]["answer"] == "no"


def test_newcomers_and_low_accuracy_voters_do_not_decide(project, pending, make_voter):
    for _ in range(5):
        vote(make_voter(right=0), project, "yes")  # no gold record yet: weight 0
    for _ in range(3):
        vote(make_voter(right=3, wrong=9), project, "yes")  # clearly below 0.7: excluded
    pending.refresh_from_db()
    assert pending.status == Photo.Status.PENDING
    assert not VerificationDecision.objects.exists()
    assert set(VerificationTask.objects.filter(photo=pending).values_list("weight", flat=True)) == {0.0}


def test_a_split_vote_stays_with_staff(project, pending, make_voter):
    for answer in ("yes", "no", "yes", "no"):
        vote(make_voter(right=12), project, answer)
    pending.refresh_from_db()
    assert pending.status == Photo.Status.PENDING


@pytest.mark.parametrize("flag", [{"flag_suspicious_volume": True}, {"flag_model_disagreement": True}])
def test_flagged_photos_are_not_offered_and_never_decided(project, pending, make_voter, flag):
    Photo.objects.filter(pk=pending.pk).update(**flag)
    voter = make_voter(right=12)
    assert client_for(voter).get(f"/api/v1/verification/next/?project={project.slug}").status_code == 204
    pending.refresh_from_db()
    for _ in range(4):  # votes cast before the flag was set do not decide it either
        VerificationTask.objects.create(project=project, volunteer=make_voter(right=12), photo=pending,
                                        label_asked=pending.label, answer="yes", weight=2.56,
                                        answered_at=pending.created_at)
    assert photo_decide_if_consensus(photo=pending) is None


def test_the_model_votes_with_capped_weight_and_never_decides_alone(project, pending, make_voter, settings):
    Photo.objects.filter(pk=pending.pk).update(model_confidence=0.9999)
    pending.refresh_from_db()
    answer, weight = model_vote(photo=pending)
    assert answer == "yes" and weight == settings.PLATFORM_VERIFY_MODEL_MAX_WEIGHT < settings.PLATFORM_VERIFY_MIN_WEIGHT
    assert photo_decide_if_consensus(photo=pending) is None
    # With the model's 2.0, two strong voters (2 x 2.56) now suffice.
    vote(make_voter(right=12), project, "yes")
    vote(make_voter(right=12), project, "yes")
    pending.refresh_from_db()
    assert pending.status == Photo.Status.APPROVED


def test_a_newcomers_early_votes_count_once_gold_shows_their_skill(project, pending, gold, make_voter, settings):
    vote(make_voter(right=12), project, "yes")
    vote(make_voter(right=12), project, "yes")  # 5.1 of the 6 needed
    newcomer = make_voter(right=0)
    vote(newcomer, project, "yes")
    pending.refresh_from_db()
    assert pending.status == Photo.Status.PENDING  # the newcomer weighs nothing yet
    settings.PLATFORM_VERIFY_GOLD_SHARE = 1.0
    client = client_for(newcomer)
    for _ in range(2):  # two gold answers, both right: Beta(3, 1), weight log(3) = 1.1
        body = client.get(f"/api/v1/verification/next/?project={project.slug}").json()
        task = VerificationTask.objects.get(public_id=body["id"])
        right = "yes" if task.label_asked_id == task.photo.label_id else "no"
        client.post(f"/api/v1/verification/{body['id']}/vote/", {"answer": right})
    pending.refresh_from_db()
    assert pending.status == Photo.Status.APPROVED
