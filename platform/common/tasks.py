"""Celery tasks of the common app (light queue)."""
from __future__ import annotations

from celery import shared_task

from common.storage_sweep import storage_sweep


@shared_task(acks_late=True)
def storage_sweep_daily() -> dict[str, int]:
    """The daily orphan sweep (CELERY_BEAT_SCHEDULE["storage-sweep"]).

    Safe to repeat or overlap: deleting an object twice is a no-op, and objects younger than
    the grace period are never touched. Returns the counts for the worker's log.
    """
    result = storage_sweep()
    return {
        "listed": result.listed, "orphans": len(result.orphans), "deleted": result.deleted,
        "delete_failed": result.delete_failed, "missing": len(result.missing),
    }
