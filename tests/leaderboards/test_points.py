"""Points: a ledger plus running totals, moved by the moderation hook."""
import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from leaderboards.models import ALL_TIME_START, PointsEntry, ScoreTotal

pytestmark = pytest.mark.django_db


def _total(project, volunteer, period="all", start=ALL_TIME_START):
    return ScoreTotal.objects.get(project=project, volunteer=volunteer, period=period, period_start=start)


def test_approval_awards_need_weighted_points_into_day_week_and_all(project, volunteer, send_photo, approve):
    # The label targets 30 photos and has none approved: the first photo earns 10 x (1 + 30/30).
    photo = approve(send_photo(volunteer, project))
    entry = PointsEntry.objects.get(photo=photo)
    assert entry.kind == "photo" and entry.points == Decimal("20.00")
    # The second one: 10 x (1 + 29/30) = 19.67, rounded to a whole 20.
    approve(send_photo(volunteer, project))
    today = timezone.now().date()
    monday = today - dt.timedelta(days=today.weekday())
    for period, start in [("day", today), ("week", monday), ("all", ALL_TIME_START)]:
        total = _total(project, volunteer, period, start)
        assert (total.points, total.photos) == (40, 2)


def test_label_at_target_earns_base_and_challenge_multiplier_counts(project, challenge, volunteer, send_photo, approve):
    label = project.labels.get(name="bees")
    label.target_count = 1
    label.save()
    challenge.points_multiplier = Decimal("1.5")
    challenge.save()
    approve(send_photo(volunteer, project, label="bees", challenge=challenge))  # 10 x 1.5 x 2
    approve(send_photo(volunteer, project, label="bees", challenge=challenge))  # 10 x 1.5 x 1
    assert sorted(PointsEntry.objects.values_list("points", flat=True)) == [Decimal("15.00"), Decimal("30.00")]


def test_pending_rejected_and_near_duplicates_earn_nothing(project, volunteer, send_photo, approve, reject):
    send_photo(volunteer, project)  # stays pending
    reject(send_photo(volunteer, project))
    original = approve(send_photo(volunteer, project))
    near = send_photo(volunteer, project)
    near.near_duplicate_of = original
    near.save(update_fields=["near_duplicate_of"])
    approve(near)
    assert PointsEntry.objects.count() == 1
    assert _total(project, volunteer).photos == 1


def test_rejecting_an_approved_photo_revokes_its_points_and_reapproval_restores(
    project, volunteer, send_photo, approve, reject
):
    photo = approve(send_photo(volunteer, project))
    reject(photo, reason="Actually a wasp")
    assert list(PointsEntry.objects.filter(photo=photo).order_by("id").values_list("kind", "points")) == [
        ("photo", Decimal("20.00")), ("revocation", Decimal("-20.00")),
    ]
    total = _total(project, volunteer)
    assert (total.points, total.photos, total.streak_current) == (0, 0, 0)
    approve(photo)
    approve(photo)  # approving an approved photo again adds nothing
    total = _total(project, volunteer)
    assert (total.points, total.photos) == (Decimal("20.00"), 1)


def test_streaks_count_consecutive_project_days_even_out_of_order(project, volunteer, send_photo, approve, reject):
    now = timezone.now()
    days_ago = [5, 1, 2, 0, 2]  # approved out of order; two photos on one day
    photos = [approve(send_photo(volunteer, project, sent_at=now - dt.timedelta(days=d))) for d in days_ago]
    total = _total(project, volunteer)
    assert (total.streak_current, total.streak_best, total.streak_last_day) == (3, 3, now.date())
    reject(photos[1])  # yesterday's only photo: the run breaks
    total = _total(project, volunteer)
    assert (total.streak_current, total.streak_best) == (1, 1)  # best counts only photos still approved


def test_points_use_the_project_time_zone(project, volunteer, send_photo, approve):
    project.time_zone = "Pacific/Kiritimati"  # UTC+14
    project.save()
    sent = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    approve(send_photo(volunteer, project, sent_at=sent))
    assert PointsEntry.objects.get().day == dt.date(2026, 3, 2)
    assert _total(project, volunteer, "week", dt.date(2026, 3, 2)).photos == 1  # a Monday


def test_signup_and_scoring_create_a_generated_public_profile(project, volunteer, send_photo, approve):
    approve(send_photo(volunteer, project))
    volunteer.refresh_from_db()
    name = volunteer.profile.display_name
    assert name.startswith("Volunteer ") and volunteer.username not in name
