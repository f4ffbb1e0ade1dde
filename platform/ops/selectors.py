"""Reads for operators: the dependencies' readiness, the queues, the workers, runs and releases.

Every call that crosses the network has a short timeout: a load balancer's probe and the
admin page must answer while a dependency hangs, not after it.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, default_storage, storages
from django.db import connection
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone

from challenges.models import Project
from config.celery import app as celery_app
from mobile_api.models import Release, VersionDistribution
from mobile_api.selectors import LIVE_STATES
from submissions.models import Photo
from training.models import TrainingRun

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds, per dependency
WORKER_REPLY_TIMEOUT = 1.0  # seconds the admin page waits for workers to answer
# A name the platform never writes: asking whether it exists is one cheap round trip.
STORAGE_PROBE_NAME = "readyz-probe"


def queue_names() -> list[str]:
    """Every Celery queue the platform sends to: the default one and each routed one."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, *routed})


# --- readiness ----------------------------------------------------------------------------


def readiness_checks() -> dict[str, dict]:
    """{name: {"ok", "ms"[, "error"]}} for the database, the broker and the storage.

    A failure names the exception class only: messages can hold hosts, users or URLs, and
    the answer goes to anyone who asks. The full message goes to the log.
    """
    checks: dict[str, Callable[[], object]] = {
        "database": _database_check,
        "broker": broker_queue_depths,
        "storage": _storage_check,
    }
    return {name: _timed(name, check) for name, check in checks.items()}


def _timed(name: str, check: Callable[[], object]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # any failure means "not ready"; the probe must answer regardless
        logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        result = {"ok": False, "error": type(exc).__name__}
    else:
        result = {"ok": True}
    return result | {"ms": round((time.perf_counter() - started) * 1000, 1)}


def _database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def broker_queue_depths() -> dict[str, int]:
    """Messages waiting in each queue (redis: list lengths; filesystem: message files)."""
    with celery_app.connection_for_read(connect_timeout=CHECK_TIMEOUT) as conn:
        conn.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT)
        return _queue_depths(conn)


def _queue_depths(conn) -> dict[str, int]:
    channel = conn.default_channel
    depths = {}
    for queue in queue_names():
        try:
            depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
        except conn.channel_errors:
            depths[queue] = 0  # Redis drops an empty queue's key: "no such queue" means empty
    return depths


class StorageNotWritable(Exception):
    """The local media folder cannot be created or written."""


def _storage_check() -> None:
    storage = _probe_storage()
    storage.exists(STORAGE_PROBE_NAME)  # S3: endpoint, credentials and signature in one HEAD
    if isinstance(storage, FileSystemStorage):
        # exists() in a missing or read-only folder just says False: check the folder itself.
        try:
            Path(storage.location).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageNotWritable(type(exc).__name__) from exc
        if not os.access(storage.location, os.W_OK):
            raise StorageNotWritable("not writable")


_s3_probes: dict[str, Storage] = {}


def _probe_storage() -> Storage:
    """The default storage; on S3, a copy with short timeouts and no retries.

    botocore retries a refused connection several times with back-off, each attempt with a
    60 s timeout by default; a probe must fail within CHECK_TIMEOUT instead. Cached per
    configuration: building an S3 client costs far more than the HEAD request.
    """
    params = settings.STORAGES["default"]
    if not params["BACKEND"].startswith("storages.backends.s3"):
        return default_storage
    key = repr(params)
    if key not in _s3_probes:
        from botocore.config import Config

        options = params.get("OPTIONS", {})
        client_config = Config(
            s3={"addressing_style": options.get("addressing_style")},
            signature_version=options.get("signature_version"),
            connect_timeout=CHECK_TIMEOUT,
            read_timeout=CHECK_TIMEOUT,
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        _s3_probes.clear()  # the settings changed (tests): the old probe is stale
        _s3_probes[key] = storages.create_storage({**params, "OPTIONS": {**options, "client_config": client_config}})
    return _s3_probes[key]


# --- the admin's operations page ----------------------------------------------------------


def broker_overview() -> dict:
    """Queue depths and the workers that answered, with the queues each consumes.

    One broker connection for both; a broker that does not answer gives ``error`` instead.
    """
    try:
        with celery_app.connection_for_read(connect_timeout=CHECK_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT)
            depths = _queue_depths(conn)
            replies = celery_app.control.inspect(timeout=WORKER_REPLY_TIMEOUT, connection=conn).active_queues()
    except Exception as exc:  # the page still shows everything else
        logger.warning("broker overview failed: %s: %s", type(exc).__name__, exc)
        return {"error": type(exc).__name__, "queues": [], "workers": []}
    workers = [
        {"hostname": hostname, "queues": sorted(queue["name"] for queue in queues)}
        for hostname, queues in sorted((replies or {}).items())
    ]
    oldest = {settings.CELERY_TASK_DEFAULT_QUEUE: followup_oldest_seconds()}
    return {
        "error": None,
        "queues": [
            {"name": name, "depth": depth,
             "consumers": sum(name in worker["queues"] for worker in workers),
             "oldest_seconds": oldest.get(name),
             "level": backlog_level(depth=depth, oldest_seconds=oldest.get(name))}
            for name, depth in depths.items()
        ],
        "workers": workers,
    }


def followup_oldest_seconds() -> float | None:
    """Seconds the oldest pending upload follow-up has waited (None: none waits).

    The database knows it whatever the broker (one indexed query: the partial index on
    pending follow-ups); the light queue holds those follow-ups.
    """
    oldest = Photo.objects.filter(followups_pending=True).aggregate(oldest=Min("updated_at"))["oldest"]
    return None if oldest is None else max(0.0, (timezone.now() - oldest).total_seconds())


def backlog_thresholds() -> dict[str, float]:
    """Where a queue's backlog becomes a warning and critical, by depth and by age (seconds).

    Depth: PLATFORM_OPS_QUEUE_WARNING / _CRITICAL. Age: from the moment the platform itself
    counts a follow-up as lost and queues it again (PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS)
    it is a warning, at ten times that critical.
    """
    resume_after = settings.PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS
    return {"depth_warning": settings.PLATFORM_OPS_QUEUE_WARNING, "depth_critical": settings.PLATFORM_OPS_QUEUE_CRITICAL,
            "age_warning": resume_after, "age_critical": 10 * resume_after}


def backlog_level(*, depth: int, oldest_seconds: float | None) -> str:
    """"ok", "warning" or "critical" for a queue, by its depth and its oldest waiting task."""
    limits, age = backlog_thresholds(), oldest_seconds or 0.0
    if depth >= limits["depth_critical"] or age >= limits["age_critical"]:
        return "critical"
    if depth >= limits["depth_warning"] or age >= limits["age_warning"]:
        return "warning"
    return "ok"


def nightly_runs_latest() -> list[dict]:
    """Each active project with its most recent nightly run (None when it never ran)."""
    latest = (
        TrainingRun.objects.filter(project=OuterRef("pk"), trigger=TrainingRun.Trigger.NIGHTLY)
        .order_by("-night", "-created_at", "-id")
        .values("pk")[:1]
    )
    projects = list(Project.objects.filter(is_active=True).annotate(run_id=Subquery(latest)).order_by("slug"))
    runs = TrainingRun.objects.in_bulk([project.run_id for project in projects if project.run_id])
    return [{"project": project, "run": runs.get(project.run_id)} for project in projects]


def releases_live() -> list[Release]:
    """Every live (active or paused) release, by model and channel, newest first."""
    return list(
        Release.objects.filter(state__in=LIVE_STATES)
        .select_related("channel__project", "version")
        .order_by("channel__project__slug", "channel__name", "-created_at", "-id")
    )


def distributions_unfinished(*, limit: int = 20) -> list[VersionDistribution]:
    """Published versions whose distribution (patches, auto channels) is not done: newest first."""
    return list(
        VersionDistribution.objects.exclude(status=VersionDistribution.Status.DONE)
        .select_related("version__project")
        .order_by("-created_at", "-id")[:limit]
    )
