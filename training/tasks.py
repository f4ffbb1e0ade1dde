"""Celery tasks: thin wrappers that load rows by id and call one service."""
from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from challenges.models import Project
from challenges.selectors import project_list_active, project_today
from submissions.models import Photo
from training.nightly import training_run_execute
from training.runs import RunClaimRefused, training_run_fail_stale
from training.scoring import photo_followups_requeue, photo_followups_run

logger = logging.getLogger(__name__)


@shared_task
def nightly_training_enqueue() -> list[int]:
    """Beat entry: queue one training task per active project for its current night."""
    queued = []
    for project in project_list_active():
        training_run_nightly.delay(project.pk, project_today(project=project).isoformat())
        queued.append(project.pk)
    return queued


@shared_task(acks_late=True, reject_on_worker_lost=True)
def training_run_nightly(project_id: int, night: str) -> str:
    """Train and publish one project's model for `night`; a second delivery does nothing."""
    project = Project.objects.get(pk=project_id)
    try:
        run = training_run_execute(project=project, night=dt.date.fromisoformat(night))
    except RunClaimRefused as exc:
        logger.info("skipping: %s", exc)
        return "claimed-elsewhere"
    return run.status


@worker_ready.connect
def _fail_runs_of_dead_workers(**kwargs) -> None:
    """A worker (re)starting fails the runs a killed worker of this host left running.

    Without this they would hold their project's lock until PLATFORM_RUN_STALE_SECONDS
    passed; the killed task itself comes back after the broker's visibility timeout.
    """
    try:
        training_run_fail_stale()
    except Exception:  # never keep a worker from starting
        logger.exception("could not check for training runs of dead workers")


@shared_task(ignore_result=True)
def photo_score_with_current_model(photo_id: int) -> float | None:
    """Score one photo's claimed label with the latest published model (sets the disagreement flag).

    Idempotent: a photo queued again by ``photo_followups_resume`` gets the same score again.
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
    return photo_followups_requeue(older_than=after, enqueue=photo_score_with_current_model.delay)


def photo_followups_queue(*, photo_id: int, **kwargs) -> None:
    """Listener of ``submissions.services.photo_followups_due``: queue the photo's scoring (light queue).

    A broker outage must not fail an upload that already succeeded: the error is logged and the
    photo stays ``followups_pending``, so ``photo_followups_resume`` queues it again.
    """
    try:
        photo_score_with_current_model.delay(photo_id)
    except Exception:
        logger.exception("could not enqueue model scoring for photo %s; it stays pending", photo_id)
