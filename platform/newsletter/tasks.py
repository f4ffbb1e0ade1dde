"""The weekly digest task (Celery beat: CELERY_BEAT_SCHEDULE["newsletter-weekly"])."""
from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.utils import timezone

from newsletter.models import NewsletterIssue
from newsletter.selectors import week_start_for
from newsletter.services import newsletter_issue_get_or_create, newsletter_issue_send


@shared_task(acks_late=True)
def newsletter_weekly(week_start: str | None = None) -> int:
    """Draft (or reuse) the issue of the week that just ended and send it once to subscribers.

    Idempotent: delivery rows are claimed per recipient, so a redelivered or repeated run
    emails nobody twice. Returns how many emails this run sent.
    """
    if week_start:
        start = dt.date.fromisoformat(week_start)
    else:
        start = week_start_for(timezone.localdate()) - dt.timedelta(days=7)
    issue = newsletter_issue_get_or_create(week_start=start)
    return newsletter_issue_send(issue=issue)


@shared_task(acks_late=True)
def newsletter_issue_send_task(issue_id: int) -> int:
    """Send one issue to its subscribers (the admin's "send to subscribers" action)."""
    issue = NewsletterIssue.objects.filter(pk=issue_id).first()
    if issue is None:
        return 0
    return newsletter_issue_send(issue=issue)
