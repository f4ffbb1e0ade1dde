"""One photo travels the whole loop on the real services.

upload (API) -> staff approve (API) -> the nightly fan-out goes through Redis to a real light
worker, which queues the training task for a real training worker (two processes, one queue
each, as deploy/ runs them) -> train, verify, publish to S3 -> the light worker distributes the
version (its published event's task) -> manifest -> download (presigned)
-> sha256 -> onnxruntime classifies the ants/bees val photos, fed exactly as the manifest says
-> a later upload is scored with that model by the light worker.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from django.db import connection
from PIL import Image

from mobile_api.models import VersionDistribution
from mobile_api.services import app_key_create
from submissions.models import Photo
from submissions.services import photo_import_folder
from training.models import ModelVersion, TrainingRun
from training.tasks import nightly_training_enqueue

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """One real `celery worker` process, consuming the given queues, logging JSON lines to a file."""

    def __init__(self, *, name: str, queues: str, env: dict, log_path: Path):
        self.name = name
        self.hostname = f"{name}-{os.getpid()}@e2e"
        self.log_path = log_path
        self._log = open(log_path, "w")
        # The command of deploy/platform-worker-*.service, on the test's servers.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", queues, "--concurrency", "1",
             "--hostname", self.hostname, "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def task_names(self) -> set[str]:
        """The tasks this worker ran: its JSON log lines written inside a task name them."""
        names = set()
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                names.add(json.loads(line).get("task_name"))
        return names - {None}

    def children(self) -> set[int]:
        """The pids of its pool processes (--concurrency 1: one), where tasks run."""
        found = set()
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                if f"\nPPid:\t{self.process.pid}\n" in status.read_text():
                    found.add(int(status.parent.name))
            except OSError:
                continue  # a process that ended while we looked
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
        sys.stdout.write(f"--- {self.name} worker log (end) ---\n{self.log_path.read_text()[-2000:]}\n")


@pytest.fixture
def celery_workers(services, s3_storage, s3_prefix, weights_path, tmp_path):
    """The production shape: a light worker and a training worker, each on its own queue, on the
    Redis broker, the test database and the same S3 prefix; the platform sends through Redis."""
    from config.celery import app

    db = connection.settings_dict
    env = {
        **os.environ,
        **services.storage_env(prefix=s3_prefix),
        "PYTHONPATH": f"platform{os.pathsep}.",
        "DJANGO_SETTINGS_MODULE": "config.settings",  # production settings, not the tests'
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": services.redis_url,
        "PLATFORM_WEIGHTS_PATH": str(weights_path),
        "PLATFORM_VAR_DIR": str(tmp_path / "worker-var"),
        "DJANGO_SECRET_KEY": "end-to-end-test",
        "PLATFORM_ENV_FILE": "",  # only what this test sets, never a developer's .env
        "PLATFORM_LOG_FORMAT": "json",
        # The loop, not every variant (tests/training/test_nightly.py builds them all): fp32 and int8.
        "PLATFORM_COMPRESSION_VARIANTS": "fp32,int8",
    }
    workers = {name: Worker(name=name, queues=name, env=env, log_path=tmp_path / f"{name}.log")
               for name in ("light", "training")}
    # Uploads in this process queue their follow-ups through Redis, as the web process does.
    saved = {key: app.conf[key] for key in ("broker_url", "task_always_eager")}
    app.conf.update(broker_url=services.redis_url, task_always_eager=False)
    app._pool = app.amqp._producer_pool = None  # connections made for another broker, if any
    try:
        deadline = time.monotonic() + 120
        hostnames = {worker.hostname for worker in workers.values()}
        while {name for reply in app.control.ping(timeout=1.0) for name in reply} < hostnames:
            dead = [worker for worker in workers.values() if worker.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"the Celery workers did not come up:\n{(dead or [workers['training']])[0].log_path.read_text()[-4000:]}")
        yield workers
    finally:
        app.conf.update(saved)
        app._pool = app.amqp._producer_pool = None
        for worker in workers.values():
            worker.stop()


def _feed(image: Image.Image, spec: dict) -> np.ndarray:
    """Preprocess one photo from the manifest's words alone (what an app developer writes)."""
    image = image.convert(spec["channel_order"])
    width, height = image.size
    scale = spec["resize"] / min(width, height)
    image = image.resize((int(width * scale), int(height * scale)), Image.Resampling.BILINEAR)
    left = (image.width - spec["input_size"]) // 2
    top = (image.height - spec["input_size"]) // 2
    image = image.crop((left, top, left + spec["input_size"], top + spec["input_size"]))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.array(spec["mean"], dtype=np.float32)) / np.array(spec["std"], dtype=np.float32)
    return pixels.transpose(2, 0, 1)[None]


def test_photo_to_published_model_to_app(celery_workers, services, api, staff_api, volunteer_api, challenge,
                                         staff, hymenoptera, tmp_path):
    import onnxruntime

    project = challenge.project
    # A volunteer sends a photo for today's challenge; staff approve it.
    mine = sorted((hymenoptera / "train" / "bees").glob("*.jpg"))[0]
    upload = io.BytesIO(mine.read_bytes())
    upload.name = "phone.jpg"
    sent = volunteer_api.post("/api/v1/photos/", {"challenge": challenge.pk, "label": "bees", "image": upload},
                              format="multipart")
    assert sent.status_code == 201, sent.content
    decided = staff_api.post(f"/api/v1/moderation/photos/{sent.json()['id']}/decision/", {"decision": "approve"},
                             format="json")
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    # The rest of the seed data set (the same service, approved on import).
    counts = photo_import_folder(project=project, folder=hymenoptera / "train", moderator=staff)
    assert counts["imported"] >= 240 and counts["duplicate"] == 1

    # What beat sends at night: the fan-out runs on the light worker and queues the training
    # task, which the routes send to the training worker.
    nightly_training_enqueue.delay()

    deadline = time.monotonic() + 900  # a loaded 2-core CI machine; about 4 min when quiet
    while True:
        run = TrainingRun.objects.filter(project=project).first()
        if run is not None and run.status != TrainingRun.Status.RUNNING:
            break
        assert time.monotonic() < deadline, f"training did not finish: {run and (run.stage, run.progress)}"
        time.sleep(1)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    assert run.trigger == TrainingRun.Trigger.NIGHTLY
    assert sent.json()["id"] in {entry["photo"] for entry in run.snapshot.manifest["photos"]}
    # The publish's event queued the distribution (patches, channels) for the light worker.
    while not VersionDistribution.objects.filter(version__project=project).exclude(status="pending").exists():
        assert time.monotonic() < deadline, "the light worker did not distribute the version"
        time.sleep(0.5)
    distribution = VersionDistribution.objects.get(version__project=project)
    assert (distribution.status, distribution.channels) == ("done", ["beta", "stable"]), distribution.error

    # What an app does: poll with its key, download the recommended ONNX file from S3, verify it.
    _, key = app_key_create(name="End-to-end app")
    api.credentials(HTTP_X_APP_KEY=key)
    answer = api.get("/api/mobile/v1/models/ants-bees/update",
                     {"install_id": "e2e-install-1", "app_version": "1.0", "platform": "android", "formats": "onnx"})
    assert answer.status_code == 200, answer.content
    manifest = answer.json()
    assert manifest["version"] == 1 == ModelVersion.objects.get(project=project).version
    artifact = next(a for a in manifest["artifacts"] if a["recommended"])
    redirect = api.get(artifact["download_url"])
    assert redirect.status_code == 302
    model_bytes = requests.get(redirect["Location"], timeout=30).content
    assert hashlib.sha256(model_bytes).hexdigest() == artifact["sha256"] and len(model_bytes) == artifact["size"]

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    correct = total = 0
    for label_index, label in enumerate(manifest["labels"]):
        for path in sorted((hymenoptera / "val" / label).glob("*.jpg")):
            with Image.open(path) as image:
                probabilities = session.run(None, {input_name: _feed(image, artifact["input"])})[0][0]
            correct += int(np.argmax(probabilities) == label_index)
            total += 1
    accuracy = correct / total
    print(f"end-to-end: val accuracy {accuracy:.3f} on {total} photos, model {len(model_bytes)} bytes")
    assert total == 153 and accuracy >= 0.90
    assert Photo.objects.filter(project=project, status=Photo.Status.APPROVED).count() == counts["imported"] + 1

    # An upload now is scored with the published model by the light worker (its follow-up task).
    later = sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[0]
    upload = io.BytesIO(later.read_bytes())
    upload.name = "later.jpg"
    sent_later = volunteer_api.post("/api/v1/photos/", {"challenge": challenge.pk, "label": "ants", "image": upload},
                                    format="multipart")
    assert sent_later.status_code == 201, sent_later.content
    photo = Photo.objects.get(public_id=sent_later.json()["id"])
    deadline = time.monotonic() + 120
    while photo.model_confidence is None:
        assert time.monotonic() < deadline, "the light worker did not score the upload"
        time.sleep(0.5)
        photo.refresh_from_db()
    assert 0.0 <= photo.model_confidence <= 1.0

    # Each task ran on the worker of its queue: scaling out is more of these processes.
    light, training = celery_workers["light"], celery_workers["training"]
    assert light.task_names() == {"training.tasks.photo_score_with_current_model",
                                  "training.tasks.nightly_training_enqueue", "mobile_api.tasks.version_distribute"}
    assert training.task_names() == {"training.tasks.training_run_nightly"}
    assert int(run.worker.rsplit(":", 1)[1]) in training.children()
