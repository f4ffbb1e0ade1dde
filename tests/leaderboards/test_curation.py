"""Admin curation: every change needs a reason and leaves an append-only audit trail."""
from decimal import Decimal

import pytest
from django.urls import reverse

from common.errors import ValidationFailed
from leaderboards.models import CurationAction, LeaderboardFlag, PointsEntry, ScoreTotal
from leaderboards.services import leaderboard_flag_set, points_adjust

pytestmark = pytest.mark.django_db


def test_adjustment_is_a_ledger_entry_moving_totals_with_an_audit_line(project, volunteer, staff, send_photo, approve):
    approve(send_photo(volunteer, project))
    points_adjust(project=project, volunteer=volunteer, points=Decimal("-5"), reason="Duplicate account", actor=staff)
    total = ScoreTotal.objects.get(project=project, volunteer=volunteer, period="all")
    assert (total.points, total.photos) == (Decimal("15.00"), 1)
    entry = PointsEntry.objects.get(kind="adjustment")
    assert entry.photo is None and entry.created_by == staff and entry.reason == "Duplicate account"
    log = CurationAction.objects.get()
    assert (log.action, log.points, log.created_by, log.reason) == ("adjust", Decimal("-5.00"), staff, "Duplicate account")


def test_curation_without_a_reason_is_refused(project, volunteer, staff):
    with pytest.raises(ValidationFailed):
        leaderboard_flag_set(project=project, volunteer=volunteer, action="pin", reason="  ", actor=staff)
    with pytest.raises(ValidationFailed):
        points_adjust(project=project, volunteer=volunteer, points=Decimal(3), reason="", actor=staff)
    assert not CurationAction.objects.exists() and not LeaderboardFlag.objects.exists()


def test_admin_action_asks_for_a_reason_then_logs_it(admin_client, project, volunteer, staff, send_photo, approve):
    approve(send_photo(volunteer, project))
    total = ScoreTotal.objects.get(project=project, volunteer=volunteer, period="all")
    url = reverse("admin:leaderboards_scoretotal_changelist")
    form = admin_client.post(url, {"action": "curate_disqualify", "_selected_action": [total.pk]})
    assert form.status_code == 200 and b'name="reason"' in form.content
    assert not LeaderboardFlag.objects.exists()
    empty = admin_client.post(url, {"action": "curate_disqualify", "_selected_action": [total.pk], "apply": "1"})
    assert empty.status_code == 200 and not LeaderboardFlag.objects.exists()  # the form again, with an error
    done = admin_client.post(
        url, {"action": "curate_disqualify", "_selected_action": [total.pk], "apply": "1", "reason": "Stock photos"},
        follow=True,
    )
    assert done.status_code == 200
    assert LeaderboardFlag.objects.get(project=project, volunteer=volunteer).disqualified
    log = CurationAction.objects.get()
    assert (log.action, log.reason, log.created_by) == ("disqualify", "Stock photos", staff)


def test_admin_adjustment_form_and_read_only_audit_log(admin_client, project, volunteer, staff):
    response = admin_client.post(
        reverse("admin:leaderboards_pointsentry_add"),
        {"project": project.pk, "volunteer": volunteer.pk, "points": "12", "reason": "Workshop helper"},
    )
    assert response.status_code == 302, response.content[:2000]
    assert ScoreTotal.objects.get(volunteer=volunteer, period="all").points == 12
    log = CurationAction.objects.get()
    assert admin_client.get(reverse("admin:leaderboards_curationaction_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:leaderboards_curationaction_add")).status_code == 403
    assert admin_client.post(reverse("admin:leaderboards_curationaction_delete", args=[log.pk])).status_code == 403
    assert CurationAction.objects.filter(pk=log.pk).exists()
