"""Training runs: the claim (one per project and night), heartbeats and progress, cancel, the end.

The run row is the job's only shared state: workers agree through the database (a claim is a
row that constraints let exist once), never through memory of this process.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from challenges.models import Project
from training.models import TrainingRun

logger = logging.getLogger(__name__)

# Progress reports write at most this often (each report is also the run's heartbeat).
HEARTBEAT_EVERY_SECONDS = 2.0

ProgressCallback = Callable[[TrainingRun], None]


class RunClaimRefused(Exception):
    """Another run holds the claim (same night, or a run of this project is going on)."""


class RunCancelled(Exception):
    """An admin asked the run to stop; raised at the next progress report."""


def training_run_claim(
    *, project: Project, night: dt.date, trigger: str, requested_by=None
) -> TrainingRun:
    """Claim the right to train `project` now; raise RunClaimRefused when it is taken.

    Stale runs (their worker stopped sending heartbeats, e.g. it was killed) are marked
    failed first, so a killed worker never blocks the next night.
    """
    training_run_fail_stale(project=project)
    now = timezone.now()
    try:
        with transaction.atomic():
            return TrainingRun.objects.create(
                project=project,
                night=night,
                trigger=trigger,
                status=TrainingRun.Status.RUNNING,
                stage="claimed",
                worker=f"{socket.gethostname()}:{os.getpid()}",
                started_at=now,
                heartbeat_at=now,
                requested_by=requested_by,
            )
    except IntegrityError as exc:
        raise RunClaimRefused(f"{project.slug}: a run for {night} is already claimed or running.") from exc


def training_run_fail_stale(*, project: Project | None = None) -> int:
    """Mark runs whose worker died as failed (of one project, or all); return how many.

    Dead means: no heartbeat for PLATFORM_RUN_STALE_SECONDS, or claimed by a process of
    this host that no longer exists. The second is known at once, so a worker restarted
    after a crash (SIGKILL, out of memory) fails its predecessor's run when it starts.
    """
    running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING)
    if project is not None:
        running = running.filter(project=project)
    cutoff = timezone.now() - dt.timedelta(seconds=settings.PLATFORM_RUN_STALE_SECONDS)
    here = f"{socket.gethostname()}:"
    gone = [
        pk for pk, worker in running.filter(worker__startswith=here).values_list("pk", "worker")
        if _process_gone(worker.removeprefix(here))
    ]
    failed = running.filter(Q(heartbeat_at__lt=cutoff) | Q(pk__in=gone)).update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        message="The worker stopped reporting (killed or lost); nothing was published.",
    )
    if failed:
        logger.warning("failed %s training run(s) of dead workers", failed)
    return failed


def _process_gone(pid: str) -> bool:
    """True when no live process has this pid (on this host)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    # A killed process that its parent has not reaped yet (a zombie) is dead all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def training_run_cancel_request(*, runs, user=None) -> list[int]:
    """Ask running runs to stop (admin action); return the ids of the runs asked.

    The worker sees the flag at its next progress report and ends the run as cancelled;
    nothing is published and its temporary files go with it. Finished runs are left alone.
    """
    pks = list(
        TrainingRun.objects.filter(
            pk__in=[run.pk for run in runs], status=TrainingRun.Status.RUNNING, cancel_requested=False
        ).values_list("pk", flat=True)
    )
    TrainingRun.objects.filter(pk__in=pks, status=TrainingRun.Status.RUNNING).update(cancel_requested=True)
    if pks:
        logger.info("cancel requested for training runs %s by %s", pks, user)
    return pks


def training_run_cancel_check(run: TrainingRun) -> None:
    """Raise RunCancelled when an admin has asked this run to stop (one indexed lookup)."""
    if TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        run.cancel_requested = True
        raise RunCancelled(f"Cancelled by an admin during {run.stage or 'start'}; nothing was published.")


def training_run_progress_save(run: TrainingRun, *, stage: str, progress: float, force: bool = False) -> None:
    """Record stage, progress and a heartbeat; throttled so progress costs no time.

    The throttle reads the run's own last heartbeat (no process-wide memory of runs): a clock
    set back makes the elapsed time negative, and that saves too.
    """
    run.stage = stage
    run.progress = round(progress, 4)
    now = timezone.now()
    if not force and run.heartbeat_at is not None:
        if 0 <= (now - run.heartbeat_at).total_seconds() < HEARTBEAT_EVERY_SECONDS:
            return
    run.heartbeat_at = now
    TrainingRun.objects.filter(pk=run.pk).update(
        stage=run.stage,
        progress=run.progress,
        heartbeat_at=run.heartbeat_at,
        snapshot=run.snapshot,
        decision=run.decision,
        config=run.config,
    )


def training_run_finish(run: TrainingRun, *, status: str, message: str) -> TrainingRun:
    """End the run with ``status`` and ``message`` (saved at once, whatever the stage)."""
    run.status = status
    run.message = message
    run.finished_at = timezone.now()
    run.heartbeat_at = run.finished_at
    if status == TrainingRun.Status.SUCCEEDED:
        run.stage, run.progress = "done", 1.0
    # Named fields: never write back cancel_requested, which an admin may set meanwhile.
    run.save(
        update_fields=[
            "status", "message", "finished_at", "heartbeat_at", "stage", "progress", "snapshot",
            "decision", "config", "metrics", "history", "gate", "model_card", "updated_at",
        ]
    )
    return run
