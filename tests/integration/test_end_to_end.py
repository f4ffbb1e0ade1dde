"""One photo travels the whole loop on the real services.

upload (API) -> staff approve (API) -> the nightly task goes through Redis to a real
Celery worker process -> train, verify, publish to S3 -> manifest -> download (presigned)
-> sha256 -> onnxruntime classifies the ants/bees val photos, fed exactly as the manifest says.
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from celery import Celery
from django.db import connection
from PIL import Image

from challenges.selectors import project_today
from mobile_api.services import app_key_create
from submissions.models import Photo
from submissions.services import photo_import_folder
from training.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def celery_worker(services, s3_storage, s3_prefix, weights_path, tmp_path):
    """A real worker process on the Redis broker, the test database and the same S3 prefix."""
    db = connection.settings_dict
    env = {
        **os.environ,
        **services.storage_env(prefix=s3_prefix),
        "PYTHONPATH": f"platform{os.pathsep}.",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": services.redis_url,
        "PLATFORM_WEIGHTS_PATH": str(weights_path),
        "PLATFORM_VAR_DIR": str(tmp_path / "worker-var"),
        "DJANGO_SECRET_KEY": "end-to-end-test",
        "PLATFORM_ENV_FILE": "",  # only what this test sets, never a developer's .env
        # The loop, not every variant (tests/training/test_nightly.py builds them all): fp32 and int8.
        "PLATFORM_COMPRESSION_VARIANTS": "fp32,int8",
    }
    log = open(tmp_path / "worker.log", "w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--queues", "light,training", "--loglevel", "INFO",
         "--hostname", f"e2e-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    # A client app of its own on the same broker: the project's app stays eager for other tests.
    client = Celery("e2e-client", broker=services.redis_url)
    try:
        deadline = time.monotonic() + 90
        while not client.control.ping(timeout=1.0):
            if worker.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"the Celery worker did not come up:\n{log.read()[-4000:]}")
        yield client
    finally:
        client.close()
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.seek(0)
        sys.stdout.write(log.read()[-3000:])
        log.close()


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


def test_photo_to_published_model_to_app(celery_worker, services, api, staff_api, volunteer_api, challenge,
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

    night = project_today(project=project).isoformat()
    celery_worker.send_task("training.tasks.training_run_nightly", args=[project.pk, night], queue="training")

    deadline = time.monotonic() + 600
    while True:
        run = TrainingRun.objects.filter(project=project).first()
        if run is not None and run.status != TrainingRun.Status.RUNNING:
            break
        assert time.monotonic() < deadline, f"training did not finish: {run and (run.stage, run.progress)}"
        time.sleep(1)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    assert run.trigger == TrainingRun.Trigger.NIGHTLY
    assert sent.json()["id"] in {entry["photo"] for entry in run.snapshot.manifest["photos"]}

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
