"""A killed training worker never blocks its project: its run is failed, the night is tried again."""
import datetime as dt
import os
import socket
import subprocess

import pytest
from celery.signals import worker_ready
from django.utils import timezone

from training.models import TrainingRun
from training.runs import training_run_claim, training_run_fail_stale
from training.tasks import training_run_nightly

pytestmark = pytest.mark.django_db
NIGHT = dt.date(2026, 11, 22)


def _claimed_by(project, worker: str, *, heartbeat_age_s: float = 0.0) -> TrainingRun:
    run = training_run_claim(project=project, night=NIGHT, trigger=TrainingRun.Trigger.NIGHTLY)
    TrainingRun.objects.filter(pk=run.pk).update(
        worker=worker, heartbeat_at=timezone.now() - dt.timedelta(seconds=heartbeat_age_s)
    )
    return run


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # exited and reaped: nothing has this pid now
    return process.pid


def test_a_run_of_a_killed_process_of_this_host_is_failed_at_the_next_claim(project):
    dead = _claimed_by(project, f"{socket.gethostname()}:{_dead_pid()}")  # heartbeat fresh: a second ago

    retry = training_run_claim(project=project, night=NIGHT, trigger=TrainingRun.Trigger.NIGHTLY)

    dead.refresh_from_db()
    assert dead.status == TrainingRun.Status.FAILED and "stopped reporting" in dead.message
    assert retry.status == TrainingRun.Status.RUNNING


@pytest.mark.parametrize("worker", [f"{socket.gethostname()}:{os.getpid()}", "another-host:1"])
def test_a_live_run_keeps_its_claim(project, worker):
    # This very process, or a process of another host (its pid means nothing here): heartbeats are fresh.
    live = _claimed_by(project, worker)

    assert training_run_fail_stale() == 0
    assert training_run_nightly.delay(project.pk, NIGHT.isoformat()).get() == "claimed-elsewhere"
    live.refresh_from_db()
    assert live.status == TrainingRun.Status.RUNNING


def test_another_hosts_run_is_failed_once_its_heartbeat_is_stale(project, settings):
    settings.PLATFORM_RUN_STALE_SECONDS = 30
    silent = _claimed_by(project, "another-host:1", heartbeat_age_s=31)

    assert training_run_fail_stale() == 1
    silent.refresh_from_db()
    assert silent.status == TrainingRun.Status.FAILED


def test_a_starting_worker_fails_the_runs_its_killed_predecessor_left(project):
    dead = _claimed_by(project, f"{socket.gethostname()}:{_dead_pid()}")

    worker_ready.send(sender=None)  # what a Celery worker sends once it is up

    dead.refresh_from_db()
    assert dead.status == TrainingRun.Status.FAILED


def test_the_nightly_task_twice_for_the_same_night_makes_one_run(project):
    # Two beats, or a redelivery: the second delivery finds the night claimed (too few photos: skipped).
    assert training_run_nightly.delay(project.pk, NIGHT.isoformat()).get() == TrainingRun.Status.SKIPPED
    assert training_run_nightly.delay(project.pk, NIGHT.isoformat()).get() == "claimed-elsewhere"
    assert TrainingRun.objects.filter(project=project, night=NIGHT).count() == 1
