"""An upload's follow-ups live in the database: a broker that loses them (or hangs) loses nothing."""
import datetime as dt
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from submissions import moderation
from submissions.models import Photo
from tests.conftest import jpeg_bytes
from tests.moderation.conftest import make_photo
from tests.moderation.test_scoring import BLUE, RED, publish, red_blue_classifier
from training import scoring
from training.tasks import photo_followups_resume

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_sessions():
    scoring.SESSIONS.clear()
    yield
    scoring.SESSIONS.clear()


def _upload(client, challenge, color) -> Photo:
    image = io.BytesIO(jpeg_bytes(color=color))
    image.name = "phone.jpg"
    response = client.post("/api/v1/photos/", {"challenge": challenge.pk, "label": "ants", "image": image},
                           format="multipart")
    assert response.status_code == 201, response.content
    return Photo.objects.get(public_id=response.json()["id"])


def _age(photo: Photo, seconds: float) -> None:
    Photo.objects.filter(pk=photo.pk).update(updated_at=timezone.now() - dt.timedelta(seconds=seconds))


def test_an_upload_is_pending_until_its_scoring_ran(volunteer_api, challenge, django_capture_on_commit_callbacks):
    publish(challenge.project, 1, red_blue_classifier())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        photo = _upload(volunteer_api, challenge, RED)
    assert photo.followups_pending and photo.model_confidence is None

    for callback in callbacks:  # the commit: enqueue (eager here), the task scores
        callback()

    photo.refresh_from_db()
    assert not photo.followups_pending and photo.model_confidence > 0.99


def test_followups_the_broker_lost_are_queued_again_once_old_enough(
    volunteer_api, challenge, settings, django_capture_on_commit_callbacks
):
    publish(challenge.project, 1, red_blue_classifier())
    settings.PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS = 60
    with django_capture_on_commit_callbacks(execute=False):  # never run: the broker lost them
        lost = _upload(volunteer_api, challenge, RED)
        young = _upload(volunteer_api, challenge, BLUE)
    _age(lost, 61)

    assert photo_followups_resume.delay().get() == 1

    lost.refresh_from_db()
    young.refresh_from_db()
    assert not lost.followups_pending and lost.model_confidence > 0.99
    # Its task is probably on its way: not queued twice.
    assert young.followups_pending and young.model_confidence is None
    _age(young, 61)
    assert photo_followups_resume.delay().get() == 1
    assert photo_followups_resume.delay().get() == 0
    young.refresh_from_db()
    assert young.flag_model_disagreement and not young.followups_pending


def test_a_backlog_behind_a_slow_worker_is_queued_again_once_per_period(
    volunteer_api, challenge, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS = 60
    with django_capture_on_commit_callbacks(execute=False):
        photo = _upload(volunteer_api, challenge, RED)
    _age(photo, 61)
    queued = []  # the broker: accepts the task, the (busy) worker has not run it yet
    monkeypatch.setattr("training.tasks.photo_score_with_current_model.delay", queued.append)

    assert photo_followups_resume.delay().get() == 1
    # The next run, a minute later, finds it still pending but queued only just now: not again.
    assert photo_followups_resume.delay().get() == 0
    _age(photo, 61)
    assert photo_followups_resume.delay().get() == 1
    assert queued == [photo.pk, photo.pk]


def test_history_imports_and_hopeless_photos_are_not_rescored(project, settings):
    settings.PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS = 60
    historic = make_photo(project=project)  # rows before the migration, imports, app feedback
    hopeless = make_photo(project=project, followups_pending=True)  # its scoring failed for a day
    _age(historic, 3600)
    _age(hopeless, (scoring.FOLLOWUPS_RESUME_GIVE_UP_AFTER + dt.timedelta(minutes=1)).total_seconds())

    assert photo_followups_resume.delay().get() == 0
    assert Photo.objects.filter(followups_pending=True).get() == hopeless


def test_a_relabelled_photo_is_pending_until_the_new_label_is_scored(project, staff, django_capture_on_commit_callbacks):
    publish(project, 1, red_blue_classifier())
    photo = make_photo(project=project, label="ants", color=BLUE)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        moderation.photo_relabel(photo=photo, label=project.labels.get(name="bees"), moderator=staff)
    assert Photo.objects.get(pk=photo.pk).followups_pending

    for callback in callbacks:
        callback()

    photo.refresh_from_db()
    assert not photo.followups_pending and photo.model_confidence > 0.99


def test_beat_runs_the_resume_task(settings):
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["photo-followups-resume"]
    assert entry["task"] == photo_followups_resume.name and entry["task"] in app.tasks
    assert entry["schedule"] == settings.PLATFORM_FOLLOWUPS_RESUME_EVERY_SECONDS


@pytest.mark.slow
def test_an_enqueue_gives_up_quickly_when_the_broker_hangs(tmp_path):
    """A Redis that accepts connections and never answers (a network partition) holds a publish ~1 s, not for ever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        code = (
            "import time, django; django.setup()\n"
            "from submissions.services import photo_followups_announce as announce\n"
            "start = time.monotonic(); announce(photo_id=1); announce(photo_id=2)\n"
            "print(time.monotonic() - start)\n"
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={"PYTHONPATH": f"{ROOT}:{ROOT / 'platform'}", "DJANGO_SETTINGS_MODULE": "config.settings",
                 "DJANGO_DEBUG": "1", "PLATFORM_ENV_FILE": "", "PLATFORM_VAR_DIR": str(tmp_path),
                 "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0", "PATH": "/usr/bin:/bin"},
        )
    assert result.returncode == 0, result.stderr[-2000:]
    two_enqueues = float(result.stdout.strip().splitlines()[-1])
    # Both were logged as failed (the photos stay pending), each within about two timeouts.
    assert result.stderr.count("could not enqueue model scoring") == 2
    assert two_enqueues < 2 * 2.5, (two_enqueues, time.monotonic() - started)
