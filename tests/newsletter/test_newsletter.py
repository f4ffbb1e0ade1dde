"""The weekly digest: content, opt-in, unsubscribe, idempotent sending, admin, beat task."""
from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.utils import timezone

from accounts.models import Profile
from newsletter.models import NewsletterDelivery, NewsletterIssue
from newsletter.selectors import newsletter_subscriber_list, week_bounds, week_start_for
from newsletter.services import (
    newsletter_issue_get_or_create,
    newsletter_issue_render,
    newsletter_issue_send,
    unsubscribe_token_make,
)
from submissions.models import Photo
from tests.factories import UserFactory
from tests.pages.builders import make_model_version, make_photo, metrics

pytestmark = pytest.mark.django_db

WEEK = dt.date(2026, 11, 9)  # a Monday


def member(*, display_name: str, opt_in: bool = True, **user_fields):
    user = UserFactory(**user_fields)
    Profile.objects.update_or_create(user=user, defaults={"display_name": display_name, "newsletter_opt_in": opt_in})
    user.refresh_from_db()
    return user


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))


@pytest.fixture
def digest_data(project):
    """A week with a featured photo, a volunteer who moved up and two model versions."""
    mover = member(display_name="SwiftBee", email="ada.lovelace@example.org", first_name="Ada", last_name="Lovelace")
    for _ in range(3):
        make_photo(project=project, volunteer=mover, status=Photo.Status.APPROVED, created_at=at(WEEK + dt.timedelta(days=2)))
    make_photo(project=project, volunteer=mover, status=Photo.Status.APPROVED, created_at=at(WEEK - dt.timedelta(days=3)))
    featured = make_photo(
        project=project, label_name="bees", status=Photo.Status.APPROVED, featured=True,
        featured_at=at(WEEK + dt.timedelta(days=4)),
    )
    old_featured = make_photo(
        project=project, status=Photo.Status.APPROVED, featured=True, featured_at=at(WEEK - dt.timedelta(days=10))
    )
    make_model_version(project=project, version=1, metrics_dict=metrics(0.70, {"ants": (0.7, 0.55, 0.6), "bees": (0.7, 0.8, 0.75)}))
    make_model_version(project=project, version=2, metrics_dict=metrics(0.80, {"ants": (0.75, 0.80, 0.77), "bees": (0.85, 0.78, 0.81)}))
    return {"mover": mover, "featured": featured, "old_featured": old_featured}


def test_digest_content(digest_data):
    issue = newsletter_issue_get_or_create(week_start=WEEK + dt.timedelta(days=3))
    assert issue.week_start == WEEK
    rendered = newsletter_issue_render(issue=issue, user=digest_data["mover"])

    for body in (rendered.text, rendered.html):
        # Featured photo of the week (as a public display copy), not last month's.
        assert str(digest_data["featured"].public_id) in body
        assert str(digest_data["old_featured"].public_id) not in body
        # Movers by display name only: no email, username or real name.
        assert "SwiftBee" in body and "+2" in body
        for private in ("ada.lovelace@example.org", digest_data["mover"].username, "Lovelace"):
            assert private not in body
        # Release notes: v2 against v1, per label.
        assert "v2" in body and "0.800" in body
        assert "+0.250" in body  # ants recall 0.55 -> 0.80
        assert "-0.020" in body  # bees recall 0.80 -> 0.78
        assert "/newsletter/unsubscribe/" in body
    assert "/photos/" in rendered.html and "/thumbnail" in rendered.html


def test_send_respects_opt_in_and_is_idempotent(digest_data):
    reader = member(display_name="QuietAnt", email="reader@example.org")
    member(display_name="NoThanks", opt_in=False, email="no@example.org")
    member(display_name="NoEmail", email="")
    UserFactory(email="noprofile@example.org")
    issue = newsletter_issue_get_or_create(week_start=WEEK)

    assert newsletter_issue_send(issue=issue) == 2
    recipients = sorted(message.to[0] for message in mail.outbox)
    assert recipients == ["ada.lovelace@example.org", "reader@example.org"]
    message = next(m for m in mail.outbox if m.to == ["reader@example.org"])
    assert message.subject == issue.subject
    assert message.alternatives[0][1] == "text/html" and "SwiftBee" in message.alternatives[0][0]
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/newsletter/unsubscribe/" in message.extra_headers["List-Unsubscribe"]

    issue.refresh_from_db()
    assert issue.status == NewsletterIssue.Status.SENT and issue.sent_count == 2 and issue.sent_at
    assert NewsletterDelivery.objects.filter(issue=issue, sent_at__isnull=False).count() == 2

    # A re-run (or a redelivered task) emails nobody twice.
    assert newsletter_issue_send(issue=issue) == 0
    assert len(mail.outbox) == 2
    # Someone who opts in later gets the issue on the next run, once.
    late = member(display_name="LateWasp", email="late@example.org")
    assert newsletter_issue_send(issue=issue) == 1
    assert mail.outbox[-1].to == [late.email]
    issue.refresh_from_db()
    assert issue.sent_count == 3
    assert reader.pk in set(NewsletterDelivery.objects.values_list("user_id", flat=True))


def test_a_claimed_recipient_is_skipped(digest_data):
    """A row claimed by another worker (sending right now) means: do not send again."""
    issue = newsletter_issue_get_or_create(week_start=WEEK)
    NewsletterDelivery.objects.create(issue=issue, user=digest_data["mover"])
    assert newsletter_issue_send(issue=issue) == 0 and mail.outbox == []


def test_failed_send_releases_the_claim(digest_data, monkeypatch):
    issue = newsletter_issue_get_or_create(week_start=WEEK)

    def broken(self, *args, **kwargs):
        raise ConnectionError("smtp down")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", broken)
    assert newsletter_issue_send(issue=issue) == 0
    assert not NewsletterDelivery.objects.exists()
    monkeypatch.undo()
    assert newsletter_issue_send(issue=issue) == 1 and len(mail.outbox) == 1


def test_unsubscribe_link_without_login(client, digest_data):
    user = digest_data["mover"]
    issue = newsletter_issue_get_or_create(week_start=WEEK)
    newsletter_issue_send(issue=issue)
    link = mail.outbox[0].extra_headers["List-Unsubscribe"].strip("<>")
    path = link.split("://", 1)[1].split("/", 1)[1]
    path = "/" + path

    # GET only asks (link scanners must not unsubscribe anyone).
    page = client.get(path)
    assert page.status_code == 200 and b"Unsubscribe" in page.content
    assert Profile.objects.get(user=user).newsletter_opt_in is True

    # POST without a CSRF token, as RFC 8058 mail clients do.
    from django.test import Client

    done = Client(enforce_csrf_checks=True).post(path, {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and b"You are unsubscribed" in done.content
    assert Profile.objects.get(user=user).newsletter_opt_in is False
    assert user not in newsletter_subscriber_list()


def test_tampered_unsubscribe_token_is_refused(client, digest_data):
    token = unsubscribe_token_make(user=digest_data["mover"])
    response = client.post(f"/newsletter/unsubscribe/{token[:-2]}xx/")
    assert response.status_code == 404
    assert Profile.objects.get(user=digest_data["mover"]).newsletter_opt_in is True


def test_beat_entry_and_weekly_task_send_last_weeks_issue(digest_data, monkeypatch):
    entry = django_settings.CELERY_BEAT_SCHEDULE["newsletter-weekly"]
    assert entry["task"] == "newsletter.tasks.newsletter_weekly"
    from config.celery import app
    from newsletter.tasks import newsletter_weekly

    assert "newsletter.tasks.newsletter_weekly" in app.tasks
    # Run on the Monday after WEEK: the digest covers WEEK.
    monkeypatch.setattr("django.utils.timezone.localdate", lambda *a, **k: WEEK + dt.timedelta(days=7))
    assert newsletter_weekly.delay().get() == 1
    issue = NewsletterIssue.objects.get()
    assert issue.week_start == WEEK and issue.status == NewsletterIssue.Status.SENT
    assert newsletter_weekly.delay().get() == 0  # redelivered: nobody twice
    assert len(mail.outbox) == 1 and NewsletterIssue.objects.count() == 1


def test_week_helpers():
    assert week_start_for(dt.date(2026, 11, 15)) == WEEK
    start, end = week_bounds(WEEK)
    assert (end - start) == dt.timedelta(days=7) and timezone.is_aware(start)


def test_admin_preview_and_actions(client, digest_data, staff, django_capture_on_commit_callbacks):
    staff.email = "admin@example.org"
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    issue = newsletter_issue_get_or_create(week_start=WEEK)

    listing = client.get("/admin/newsletter/newsletterissue/").content.decode()
    assert f"/admin/newsletter/newsletterissue/{issue.pk}/preview/" in listing
    preview = client.get(f"/admin/newsletter/newsletterissue/{issue.pk}/preview/")
    assert preview.status_code == 200 and b"SwiftBee" in preview.content

    changelist = "/admin/newsletter/newsletterissue/"
    client.post(changelist, {"action": "send_test_to_me", "_selected_action": [issue.pk]})
    assert [m.to for m in mail.outbox] == [["admin@example.org"]] and mail.outbox[0].subject.startswith("[Test]")
    issue.refresh_from_db()
    assert issue.status == NewsletterIssue.Status.DRAFT and not NewsletterDelivery.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        client.post(changelist, {"action": "send_to_subscribers", "_selected_action": [issue.pk]})
    assert len(mail.outbox) == 2 and mail.outbox[1].to == ["ada.lovelace@example.org"]
    issue.refresh_from_db()
    assert issue.status == NewsletterIssue.Status.SENT


def test_volunteers_cannot_open_the_admin_preview(client, volunteer):
    issue = newsletter_issue_get_or_create(week_start=WEEK)
    client.force_login(volunteer)
    response = client.get(f"/admin/newsletter/newsletterissue/{issue.pk}/preview/")
    assert response.status_code == 302  # to the admin login
