"""Writes for the weekly digest: draft an issue, render it, send a test, send it once to subscribers."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from common.errors import NotFound, ValidationFailed
from newsletter.models import NewsletterDelivery, NewsletterIssue
from newsletter.selectors import (
    newsletter_featured_photos,
    newsletter_movers,
    newsletter_release_notes,
    newsletter_subscriber_list,
    week_start_for,
)

logger = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "newsletter.unsubscribe"


def _absolute(path: str) -> str:
    base = settings.PLATFORM_BASE_URL
    return base.rstrip("/") + path


def _absolute_url(name: str, *args) -> str | None:
    """An absolute link to a named route, or None while that route does not exist."""
    try:
        return _absolute(reverse(name, args=args))
    except NoReverseMatch:
        return None


def unsubscribe_token_make(*, user) -> str:
    """A signed, non-expiring token naming the user (unsubscribe links must keep working)."""
    return signing.dumps({"u": user.pk}, salt=UNSUBSCRIBE_SALT, compress=True)


def unsubscribe_url(*, user) -> str:
    return _absolute(reverse("newsletter-unsubscribe", args=[unsubscribe_token_make(user=user)]))


def newsletter_issue_get_or_create(*, week_start: dt.date) -> NewsletterIssue:
    """The draft issue of the week starting `week_start` (normalised to its Monday)."""
    week_start = week_start_for(week_start)
    issue, _created = NewsletterIssue.objects.get_or_create(
        week_start=week_start,
        defaults={"subject": f"Photo challenges: your week of {week_start:%-d %B %Y}"},
    )
    return issue


@dataclass(frozen=True)
class RenderedIssue:
    subject: str
    text: str
    html: str


def _digest_context(*, issue: NewsletterIssue) -> dict:
    """What every recipient's copy shares (queried once per send, not once per recipient)."""
    featured = [
        {
            "photo": photo,
            "image_url": _absolute_url("photo-thumbnail", photo.public_id) or _absolute_url("photo-display", photo.public_id),
            "page_url": _absolute_url("photo-display", photo.public_id),
        }
        for photo in newsletter_featured_photos(week_start=issue.week_start)
    ]
    return {
        "issue": issue,
        "week_end": issue.week_start + dt.timedelta(days=6),
        "featured": featured,
        "movers": newsletter_movers(week_start=issue.week_start),
        "releases": newsletter_release_notes(),
        "site_url": _absolute("/"),
        "gallery_url": _absolute_url("gallery"),
        "releases_url": _absolute_url("releases"),
        "leaderboards_url": _absolute_url("leaderboards"),
    }


def newsletter_issue_render(*, issue: NewsletterIssue, user=None, shared: dict | None = None) -> RenderedIssue:
    """The digest as plain text and HTML; with `user`, it carries their unsubscribe link."""
    context = {
        **(shared if shared is not None else _digest_context(issue=issue)),
        "unsubscribe_url": unsubscribe_url(user=user) if user is not None else None,
    }
    return RenderedIssue(
        subject=issue.subject,
        text=render_to_string("newsletter/digest.txt", context),
        html=render_to_string("newsletter/digest.html", context),
    )


def _message(*, rendered: RenderedIssue, user, subject: str) -> EmailMultiAlternatives:
    link = unsubscribe_url(user=user)
    # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the link.
    headers = {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    message = EmailMultiAlternatives(
        subject=subject, body=rendered.text, from_email=settings.DEFAULT_FROM_EMAIL, to=[user.email], headers=headers
    )
    message.attach_alternative(rendered.html, "text/html")
    return message


def newsletter_issue_send_test(*, issue: NewsletterIssue, user) -> None:
    """Send the issue to one admin only (no delivery row: the real send still reaches them)."""
    if not user.email:
        raise ValidationFailed("Add an email address to your account to receive a test.", code="no_email")
    rendered = newsletter_issue_render(issue=issue, user=user)
    _message(rendered=rendered, user=user, subject=f"[Test] {rendered.subject}").send()


def _claim(*, issue: NewsletterIssue, user) -> NewsletterDelivery | None:
    """Claim (issue, user) in its own committed transaction; None when someone already did."""
    try:
        with transaction.atomic():
            return NewsletterDelivery.objects.create(issue=issue, user=user)
    except IntegrityError:
        return None


def newsletter_issue_send(*, issue: NewsletterIssue) -> int:
    """Email the issue to every opted-in volunteer who has not had it yet; returns how many got it now.

    Each recipient's delivery row is claimed (unique per issue and user) and committed
    before the email leaves, so a re-run, an overlapping worker or a redelivered task sends
    nobody the issue twice. A failed send releases its claim so the next run retries it.
    """
    sent = 0
    shared = _digest_context(issue=issue)
    for user in newsletter_subscriber_list().select_related("profile"):
        delivery = _claim(issue=issue, user=user)
        if delivery is None:
            continue
        try:
            rendered = newsletter_issue_render(issue=issue, user=user, shared=shared)
            _message(rendered=rendered, user=user, subject=rendered.subject).send()
        except Exception:
            logger.exception("newsletter %s: sending to user %s failed; released for a retry", issue.pk, user.pk)
            delivery.delete()
            continue
        NewsletterDelivery.objects.filter(pk=delivery.pk).update(sent_at=timezone.now())
        sent += 1
    with transaction.atomic():
        locked = NewsletterIssue.objects.select_for_update().get(pk=issue.pk)
        locked.sent_count = locked.deliveries.filter(sent_at__isnull=False).count()
        if locked.status != NewsletterIssue.Status.SENT:
            locked.status = NewsletterIssue.Status.SENT
            locked.sent_at = timezone.now()
        locked.save(update_fields=["sent_count", "status", "sent_at"])
    issue.refresh_from_db()
    logger.info("newsletter %s (%s): sent to %d volunteers now, %d in all", issue.pk, issue.week_start, sent, issue.sent_count)
    return sent


def newsletter_unsubscribe(*, token: str):
    """Turn the newsletter off for the user the token names; returns that user."""
    try:
        data = signing.loads(token, salt=UNSUBSCRIBE_SALT)
        user = get_user_model().objects.select_related("profile").get(pk=data["u"])
    except (signing.BadSignature, KeyError, TypeError, get_user_model().DoesNotExist):
        raise NotFound("This unsubscribe link is not valid.", code="invalid_unsubscribe_link") from None
    profile = getattr(user, "profile", None)
    if profile is not None and getattr(profile, "newsletter_opt_in", False):
        profile.newsletter_opt_in = False
        profile.save(update_fields=["newsletter_opt_in"])
    return user
