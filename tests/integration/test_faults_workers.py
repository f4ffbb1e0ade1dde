"""Faults of the background side, on real processes: a broker outage, a killed worker, two beats.

Each test breaks something for real (stops Redis, SIGKILLs a worker, starts a second beat),
then checks the data: nothing accepted is lost, nothing half-made is published, nothing runs twice.
"""
from __future__ import annotations

import hashlib
import shutil
import time

import pytest
import requests
from rest_framework.authtoken.models import Token

from challenges.selectors import project_today
from submissions.models import Photo
from submissions.services import photo_import_folder
from tests.conftest import jpeg_bytes
from tests.integration.workers import Processes, process_env
from tests.moderation.test_scoring import publish, red_blue_classifier
from training.models import ModelArtifact, ModelVersion, TrainingRun

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

@pytest.fixture
def processes(services, s3_storage, s3_prefix, tmp_path):
    started = Processes(env=process_env(services, s3_prefix=s3_prefix, var_dir=tmp_path / "var"), log_dir=tmp_path)
    yield started
    started.stop_all()


def _objects(services, prefix: str) -> list[str]:
    listing = services.boto3_client().list_objects_v2(Bucket=services.s3_bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_uploads_during_a_redis_outage_are_accepted_and_scored_once_it_is_back(
    services, processes, challenge, volunteer, fault_report
):
    n = 8
    publish(challenge.project, 1, red_blue_classifier())  # in S3: scoring has something to say
    processes.env.update(PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS="3", PLATFORM_FOLLOWUPS_RESUME_EVERY_SECONDS="2")
    worker = processes.worker("light", queues="light")
    beat = processes.beat("beat")
    url = processes.web()
    headers = {"Authorization": f"Token {Token.objects.create(user=volunteer).key}"}

    def upload(color) -> tuple[requests.Response, float]:
        started = time.monotonic()
        answer = requests.post(f"{url}/api/v1/photos/", headers=headers, timeout=60,
                               data={"challenge": challenge.pk, "label": "ants"},
                               files={"image": ("phone.jpg", jpeg_bytes(color=color), "image/jpeg")})
        return answer, time.monotonic() - started

    # Before the fault: the follow-up goes through Redis at once.
    before, _ = upload((230, 20, 20))
    assert before.status_code == 201, before.text
    _wait(lambda: not Photo.objects.get(public_id=before.json()["id"]).followups_pending, timeout=30,
          what="the scoring of a photo sent before the outage")

    services.control("stop-redis")
    try:
        answers = [upload((220 - i, 20, 20) if i % 2 else (20, 20, 220 - i)) for i in range(n)]
    finally:
        services.control("start-redis")  # empty: whatever was queued before is gone too
    back = time.monotonic()

    accepted = [answer.json()["id"] for answer, _ in answers if answer.status_code == 201]
    slowest = max(seconds for _, seconds in answers)
    assert len(accepted) == n, [answer.text[:200] for answer, _ in answers if answer.status_code != 201]
    assert slowest < 5.0  # the broker timeouts, not a hang
    photos = Photo.objects.filter(public_id__in=accepted)
    assert photos.count() == n and all(photo.followups_pending for photo in photos)

    # Beat's resume task finds them in the database and queues them again.
    _wait(lambda: not photos.filter(followups_pending=True).exists(), timeout=90,
          what="the follow-ups after Redis came back", log=processes)
    recovered = time.monotonic() - back
    photos = photos.all()  # read again: scored since
    prefix = processes.env["AWS_S3_LOCATION"]
    stored = set(_objects(services, f"{prefix}/photos/"))
    lost = n - sum(f"{prefix}/{photo.image.name}" in stored for photo in photos)  # each row and its file
    assert lost == 0
    for photo in photos:
        # Scored by the published model, right however often it was delivered: red ants agree, blue ones do not.
        assert photo.model_confidence is not None
        assert photo.flag_model_disagreement == (photo.model_confidence < 0.2)
    assert {round(photo.model_confidence) for photo in photos} == {0, 1}
    scorings = _succeeded(worker, "training.tasks.photo_score_with_current_model[") - 1  # minus the one before
    assert scorings >= n
    assert "Sending due task photo-followups-resume" in beat.log()
    fault_report.add(
        fault="Redis stopped during uploads",
        tried=f"stopped Redis under gunicorn, a light worker and beat; {n} volunteer uploads through the API; "
              "started Redis again, empty",
        seen=f"{len(accepted)}/{n} uploads 201 during the outage, max answer time {slowest:.2f} s",
        checked=f"{n}/{n} follow-ups done (scored by the published model, pending cleared) {recovered:.1f} s "
                f"after Redis came back; {scorings} scoring runs for {n} photos (idempotent)",
        lost=lost, max_answer_seconds=round(slowest, 2), recovered_seconds=round(recovered, 1),
    )


def test_a_training_worker_killed_mid_run_publishes_nothing_and_the_night_is_trained_again(
    services, processes, project, staff, hymenoptera, weights_path, s3_prefix, tmp_path, fault_report
):
    from celery import Celery

    visibility = 10
    folder = tmp_path / "seed"
    for label in ("ants", "bees"):
        (folder / label).mkdir(parents=True)
        for path in sorted((hymenoptera / "train" / label).glob("*.jpg"))[:15]:
            shutil.copy(path, folder / label / path.name)
    assert photo_import_folder(project=project, folder=folder, moderator=staff)["imported"] == 30
    processes.env.update(
        PLATFORM_WEIGHTS_PATH=str(weights_path),
        # The float model only, as ONNX: what is tested is the publication, not compression.
        PLATFORM_COMPRESSION_VARIANTS="fp32", PLATFORM_COMPRESSION_FORMATS="onnx",
        PLATFORM_MAX_ACCURACY_LOSS_POINTS="99",
        # Redis hands the killed task out again after this (production: an hour).
        PLATFORM_BROKER_VISIBILITY_TIMEOUT_SECONDS=str(visibility), PLATFORM_RUN_STALE_SECONDS=str(visibility - 5),
    )
    first = processes.worker("training-1", queues="training")
    night = project_today(project=project).isoformat()
    client = Celery("faults-client", broker=services.redis_url, set_as_current=False)  # the tests keep their app
    try:
        client.send_task("training.tasks.training_run_nightly", args=[project.pk, night], queue="training")
    finally:
        client.close()

    # Past the snapshot, inside the torch pipeline (publishing is at 99%): kill.
    run = _wait(lambda: TrainingRun.objects.filter(project=project, progress__gt=0.02).first(), timeout=180,
                what="the run to get past its snapshot", log=processes)
    assert run.status == TrainingRun.Status.RUNNING and run.worker.endswith(f":{first.pid}")
    first.kill()
    killed = time.monotonic()
    killed_at = TrainingRun.objects.get(pk=run.pk)
    assert killed_at.progress < 0.95, killed_at.stage
    assert not ModelVersion.objects.exists() and not ModelArtifact.objects.exists()
    assert _objects(services, f"{s3_prefix}/models/") == []

    # The night's message was delivered long enough ago to be visible again when a worker starts.
    time.sleep(max(0.0, visibility + 1 - (time.time() - run.started_at.timestamp())))
    second = processes.worker("training-2", queues="training")
    failed = _wait(lambda: TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.FAILED).first(),
                   timeout=30, what="the killed run to be marked failed", log=processes)
    failed_after = time.monotonic() - killed
    # Nobody sent anything: Redis redelivers the killed task and it trains the night again.
    retry = _wait(lambda: TrainingRun.objects.filter(project=project).exclude(pk=run.pk)
                  .exclude(status=TrainingRun.Status.RUNNING).first(),
                  timeout=300, what="the redelivered run", log=processes)
    assert retry.status == TrainingRun.Status.SUCCEEDED, retry.message
    assert retry.trigger == TrainingRun.Trigger.NIGHTLY and retry.night.isoformat() == night
    assert retry.worker.endswith(f":{second.pid}") and "stopped reporting" in failed.message

    version = ModelVersion.objects.get(project=project)
    assert version.version == 1 and version.run == retry
    artifacts = list(version.artifacts.all())
    assert artifacts
    for artifact in artifacts:
        with artifact.file.open("rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == artifact.sha256
    stored = _objects(services, f"{s3_prefix}/models/")
    assert sorted(stored) == sorted(f"{s3_prefix}/{a.file.name}" for a in artifacts)
    fault_report.add(
        fault="Training worker killed (SIGKILL) mid-run",
        tried=f"SIGKILL of the solo training worker at {killed_at.stage} ({killed_at.progress:.0%}) of a nightly run; "
              "a new training worker started",
        seen=f"the run was marked failed {failed_after:.1f} s after the kill (when the new worker started); "
             f"Redis redelivered the night's task after its visibility timeout ({visibility} s here, 1 h by default)",
        checked="before the retry: 0 versions, 0 artifacts, 0 objects under models/; the redelivered run "
                f"published version 1 with {len(artifacts)} file(s), sha256 verified in S3",
        lost=0, failed_after_seconds=round(failed_after, 1),
    )


def test_two_beats_by_accident_start_one_nightly_run(services, processes, project, fault_report):
    processes.env.update(PLATFORM_NIGHTLY_CRON="* * * * *")  # every minute, so the test need not wait for 2 am
    worker = processes.worker("worker", queues="light,training")
    beats = [processes.beat("beat-a"), processes.beat("beat-b")]
    for beat in beats:  # the next minute, give or take a beat starting across it
        beat.wait_for_log("Sending due task nightly-training", timeout=130)
    for beat in beats:
        beat.stop()
    sent = sum(beat.log().count("Sending due task nightly-training") for beat in beats)

    _wait(lambda: _succeeded(worker, "training.tasks.training_run_nightly[") >= sent, timeout=60,
          what=f"{sent} nightly deliveries", log=processes)
    runs = TrainingRun.objects.filter(project=project)
    assert runs.count() == 1
    run = runs.get()
    assert run.trigger == TrainingRun.Trigger.NIGHTLY and run.status == TrainingRun.Status.SKIPPED  # too few photos
    assert worker.log().count("'claimed-elsewhere'") == sent - 1
    fault_report.add(
        fault="Two beat processes",
        tried="two celery beat processes (schedule files of their own) with the nightly entry every minute, "
              "one worker for both queues",
        seen=f"{sent} nightly sends, {sent} training tasks delivered",
        checked=f"1 training run for the project and night; {sent - 1} of {sent} deliveries logged as claimed elsewhere",
        lost=0, sends=sent,
    )


def _succeeded(process, task: str) -> int:
    """How many runs of ``task`` the worker logged as succeeded."""
    return sum(task in line and " succeeded in " in line for line in process.log().splitlines())


def _wait(predicate, *, timeout: float, what: str, log: Processes | None = None):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}\n{p.log()[-3000:]}" for p in (log.started if log else []))
            pytest.fail(f"waited {timeout:.0f} s for {what}{tails}")
        time.sleep(0.2)
