"""Celery tasks of the submissions app: thin wrappers that load rows by id and call one service.

Never imports torch: the scoring service runs the published ONNX file with onnxruntime.
"""
from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings

from submissions.models import Photo
from submissions.moderation import photo_followups_requeue
from submissions.moderation import photo_followups_run

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def photo_score_with_current_model(photo_id: int) -> float | None:
    """Score one photo's claimed label with the latest published model (sets the disagreement flag).

    Idempotent: a photo re-queued by ``photo_followups_requeue`` gets the same score again.
    """
    photo = Photo.objects.select_related("label", "project").filter(pk=photo_id).first()
    if photo is None:
        # Deleted between upload and scoring: nothing to do.
        logger.info("photo %s is gone; not scoring", photo_id)
        return None
    return photo_followups_run(photo=photo)


@shared_task(ignore_result=True)
def photo_followups_resume() -> int:
    """Beat entry: queue again the follow-ups the broker lost (pending in the database)."""
    after = dt.timedelta(seconds=settings.PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS)
    return photo_followups_requeue(older_than=after)
