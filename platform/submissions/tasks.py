"""Celery tasks of the submissions app: thin wrappers that load rows by id and call one service.

Never imports torch: the scoring service runs the published ONNX file with onnxruntime.
"""
from __future__ import annotations

import logging

from celery import shared_task

from submissions.models import Photo
from submissions.moderation import photo_score_with_model

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def photo_score_with_current_model(photo_id: int) -> float | None:
    """Score one photo's claimed label with the latest published model (sets the disagreement flag)."""
    photo = Photo.objects.select_related("label", "project").filter(pk=photo_id).first()
    if photo is None:
        # Deleted between upload and scoring: nothing to do.
        logger.info("photo %s is gone; not scoring", photo_id)
        return None
    return photo_score_with_model(photo=photo)
