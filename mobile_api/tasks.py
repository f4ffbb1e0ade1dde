"""Celery tasks of distribution (light queue): thin wrappers that load rows by id and call one service.

Training announces a new version with ``training.signals.version_published``; the receiver
here (connected in ``MobileApiConfig.ready``) records the distribution as pending and queues
``version_distribute`` after the commit. Training never imports this app.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction

from common.errors import DATABASE_ERRORS
from mobile_api.models import VersionDistribution
from mobile_api.services import (
    DistributionInterrupted,
    version_distribution_pending,
    version_distribution_record,
    version_distribution_run,
)
from training.models import ModelVersion

logger = logging.getLogger(__name__)

# Attempts after the first, spaced by exponential backoff (1, 2, 4, ... s with jitter, at most
# 10 minutes): a storage or database outage of a few minutes delays distribution, no more.
DISTRIBUTE_MAX_RETRIES = 8
DISTRIBUTE_BACKOFF_MAX_SECONDS = 600


@shared_task(
    bind=True, acks_late=True, ignore_result=True,
    autoretry_for=(DistributionInterrupted, *DATABASE_ERRORS), retry_backoff=True,
    retry_backoff_max=DISTRIBUTE_BACKOFF_MAX_SECONDS, retry_jitter=True, max_retries=DISTRIBUTE_MAX_RETRIES,
)
def version_distribute(self, distribution_id: int) -> str | None:
    """Build the patches of a published version and release it on the auto-promote channels.

    Idempotent: a redelivered or retried task finishes what an earlier attempt left. Returns
    the record's status (None when the record is gone).
    """
    distribution = VersionDistribution.objects.select_related("version__project").filter(pk=distribution_id).first()
    if distribution is None:
        logger.info("distribution %s is gone; nothing to do", distribution_id)
        return None
    # Run in-process (eager: tests, CELERY_TASK_ALWAYS_EAGER) nothing would retry later, and
    # Celery's eager retries run at once: the first attempt is the last, the record tells staff.
    final = self.request.is_eager or self.request.retries >= DISTRIBUTE_MAX_RETRIES
    return version_distribution_run(distribution=distribution, final_attempt=final).status


def version_distribution_request(*, version: ModelVersion) -> VersionDistribution:
    """Record the version's distribution as pending and queue its task after the commit.

    The receiver of ``version_published`` and the admin's "Distribute again" call this. A
    broker that cannot take the task leaves the record failed with the reason, for staff to
    retry; the version stays published either way.
    """
    with transaction.atomic():
        distribution = version_distribution_pending(version=version)
        transaction.on_commit(lambda: _send(distribution))
    return distribution


def _send(distribution: VersionDistribution) -> None:
    try:
        version_distribute.delay(distribution.pk)
    except Exception as exc:  # the broker is down or refuses: say so where staff look
        logger.exception("could not queue the distribution of %s", distribution.version)
        version_distribution_record(distribution=distribution, status=VersionDistribution.Status.FAILED,
                                    error=f"could not be queued: {type(exc).__name__}: {exc}")


def version_published_receive(sender, *, version: ModelVersion, **kwargs) -> None:
    """Receiver of ``training.signals.version_published`` (connected in MobileApiConfig.ready)."""
    version_distribution_request(version=version)
