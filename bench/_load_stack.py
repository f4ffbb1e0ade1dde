"""The real stack bench/load_mixed.py puts under load: a fresh database, seed data, gunicorn, a light worker.

Everything runs on the servers of scripts/services.sh (PostgreSQL, Redis, radosgw on loopback)
and is production-shaped: DEBUG off, Redis as broker and cache, S3 storage (under a key prefix
of its own), gunicorn sync workers and one Celery worker on the ``light`` queue, which scores
every upload with the published ONNX model (onnxruntime). No Django in this process: the
seed runs in ``manage.py shell`` and checks read PostgreSQL, Redis and S3 directly, so the
pytest process that imports this module keeps its own Django settings untouched.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._procs import children  # noqa: E402

PYTHON = sys.executable
PHOTOS = Path(os.environ.get("PLATFORM_TEST_HYMENOPTERA", ROOT.parent / "shared" / "data" / "hymenoptera")) / "train"
PROJECT = "load"
LABELS = ("ants", "bees")
# Redis databases of their own: leftover messages of other tests on db 0 must not reach
# this worker, and its throttle counters must not meet theirs.
BROKER_DB, CACHE_DB = 11, 12

# Run by `manage.py shell -c` with the stack's environment; parameters come from the JSON file
# named by LOAD_SEED (photos are too big for an environment variable).
SEED_SCRIPT = """
import datetime as dt, hashlib, io, json, os
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.authtoken.models import Token
from challenges.models import Challenge, Label, Project
from challenges.selectors import project_today
from mobile_api.services import app_key_create, channel_defaults_ensure, release_promote
from submissions.moderation import photo_feature
from submissions.services import NewPhoto, photo_moderate, photo_upload
from training.ml.config import Preprocessing
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

seed = json.loads(open(os.environ["LOAD_SEED"]).read())
User = get_user_model()
project = Project.objects.create(slug=seed["project"], title="Load")
labels = [Label.objects.create(project=project, name=name) for name in seed["labels"]]
today = project_today(project=project)
challenge = Challenge.objects.create(project=project, day=today, title="Load")
challenge.labels.set(labels)
volunteers = User.objects.bulk_create([User(username=f"load-volunteer-{i:04d}") for i in range(seed["volunteers"])])
tokens = [Token.objects.create(user=user).key for user in volunteers]
staff = User.objects.create(username="load-staff", is_staff=True)

# The published model first, so the worker scores the seed photos with it.
preprocessing = Preprocessing(**seed["preprocessing"])
payload = bytes.fromhex(seed["onnx_hex"])
snapshot = DatasetSnapshot.objects.create(project=project, manifest_sha256="0" * 64, manifest={},
                                          label_counts={}, photo_count=0)
run = TrainingRun.objects.create(project=project, night=today, trigger="manual", status="succeeded")
version = ModelVersion.objects.create(project=project, version=1, run=run, snapshot=snapshot, labels=seed["labels"],
                                      preprocessing=preprocessing.to_manifest(), metrics={"accuracy": 0.9})
name = default_storage.save(f"models/{project.slug}/v1/{project.slug}-v1-fp32.onnx", ContentFile(payload))
ModelArtifact.objects.create(version=version, format="onnx", variant="fp32", precision="fp32", recommended=True,
                             file=name, size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                             preprocessing=preprocessing.to_manifest(), measurements={"accuracy": 0.9},
                             verification={})
(stable,) = [c for c in channel_defaults_ensure(project=project) if c.name == "stable"]
release_promote(channel=stable, version=version, reason="load benchmark")
# Polls are the load, not the key's per-minute limit.
_, app_key = app_key_create(name="Load app", rate_limit_per_minute=1_000_000_000)

# Approved photos give the leaderboard points; featured ones fill the gallery.
featured = []
for i, hex_photo in enumerate(seed["photos_hex"]):
    data = bytes.fromhex(hex_photo)
    photo = photo_upload(new=NewPhoto(project=project, challenge=challenge, label_name=seed["labels"][i % 2],
                         upload=io.BytesIO(data), size=len(data), volunteer=volunteers[i % len(volunteers)])).photo
    photo_moderate(photo=photo, moderator=staff, approve=True)
    if i % 2 == 0:
        photo_feature(photo=photo, featured=True, moderator=staff)
        featured.append(str(photo.public_id))
print("LOAD", json.dumps({"challenge": challenge.pk, "tokens": tokens, "app_key": app_key, "featured": featured}))
"""


def services_env(services_dir: Path) -> dict[str, str]:
    """The variables scripts/services.sh wrote to DIR/env (its `export NAME=value` lines)."""
    found = {}
    for line in (Path(services_dir) / "env").read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            found[name] = value.strip("'\"")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_onnx_classifier(*, labels: int, input_size: int, seed: int = 0) -> bytes:
    """A real ONNX image classifier (Conv 3x3 -> ReLU -> global pool -> Gemm -> Softmax).

    Small on purpose: the worker's cost per upload is then what the platform adds around
    the model (fetch the photo from S3, decode, preprocess, one onnxruntime run, one UPDATE).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    channels = 32
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "head_w", "head_b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "load-tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, input_size, input_size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", labels])],
        initializer=[
            numpy_helper.from_array(rng.normal(0, 0.5, (channels, 3, 3, 3)).astype(np.float32), "conv_w"),
            numpy_helper.from_array(rng.normal(0, 1.0, (labels, channels)).astype(np.float32), "head_w"),
            numpy_helper.from_array(np.zeros(labels, dtype=np.float32), "head_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def jpegs_from_photos(count: int, *, size: tuple[int, int], offset: int = 0) -> list[bytes]:
    """`count` JPEGs (quality 90) of real ants/bees photos resized to `size`."""
    from PIL import Image

    sources = sorted(PHOTOS.glob("*/*.jpg"))[offset:offset + count]
    if len(sources) < count:
        raise SystemExit(f"need {offset + count} photos under {PHOTOS} (set PLATFORM_TEST_HYMENOPTERA)")
    out = []
    for path in sources:
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
            out.append(buffer.getvalue())
    return out


def with_unique_comment(jpeg: bytes, tag: str) -> bytes:
    """The same JPEG with a COM segment after SOI: new bytes (not an exact duplicate), same pixels."""
    text = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _redis_url(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def pids_tree(pid: int) -> list[int]:
    """A process and all its descendants (gunicorn's workers, Celery's pool children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def rss_mb(pids: list[int]) -> float:
    """Summed VmRSS of the processes (shared pages of forked children count once per child)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue  # exited between listing and reading
    return total_kb / 1024


@dataclass
class Stack:
    """A running stack: where it answers, what it was seeded with, and the processes to watch."""

    services_dir: Path
    tmp: Path
    database: str
    env: dict[str, str]
    base_url: str
    tag: str
    seed: dict = field(default_factory=dict)
    gunicorn: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    # --- the parts ----------------------------------------------------------------------

    def pg_connect(self, *, admin: bool = False):
        import psycopg

        url = self.env["DATABASE_URL"]
        if admin:
            url = _with_database(url, "postgres")
        return psycopg.connect(url, autocommit=True)

    def redis(self, variable: str = "CELERY_BROKER_URL"):
        import redis

        return redis.Redis.from_url(self.env[variable])

    def redis_clear(self) -> None:
        """Empty this bench's own Redis databases (broker and cache): nothing of another run meets this one."""
        for variable in ("CELERY_BROKER_URL", "CACHE_URL"):
            self.redis(variable).flushdb()

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.env["AWS_S3_ENDPOINT_URL"], aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name=self.env["AWS_S3_REGION_NAME"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def s3_key(self, name: str) -> str:
        return f"{self.env['AWS_S3_LOCATION']}/{name}"

    def web_pids(self) -> list[int]:
        return pids_tree(self.gunicorn.pid) if self.gunicorn else []

    def worker_pids(self) -> list[int]:
        return pids_tree(self.worker.pid) if self.worker else []

    def service_pids(self) -> list[int]:
        """PostgreSQL (postmaster and its backends), Redis and the Ceph daemons of services_dir."""
        pids = []
        pidfiles = [self.services_dir / "postgres" / "data" / "postmaster.pid", self.services_dir / "redis" / "redis.pid",
                    *sorted((self.services_dir / "ceph" / "run").glob("*.pid"))]
        for pidfile in pidfiles:
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            pids += pids_tree(pid)
        return pids


def stack_create(*, services_dir: Path, tmp: Path) -> Stack:
    """The stack's environment on the servers of ``services_dir``; nothing is started or created yet."""
    services = services_env(services_dir)
    tag = secrets.token_hex(4)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PLATFORM_", "AWS_", "CELERY_"))},
        "DJANGO_SETTINGS_MODULE": "bench.bench_settings",  # production settings + the baseline view
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "DJANGO_DEBUG": "0",
        "PLATFORM_ENV_FILE": "",
        "PLATFORM_VAR_DIR": str(tmp / "var"),
        "PLATFORM_LOG_LEVEL": "WARNING",
        "PLATFORM_BASE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": _with_database(services["DATABASE_URL"], f"load_{tag}"),
        "CELERY_BROKER_URL": _redis_url(services["TEST_REDIS_URL"], BROKER_DB),
        "CACHE_URL": _redis_url(services["TEST_REDIS_URL"], CACHE_DB),
        "STORAGE_BACKEND": "s3",
        "AWS_STORAGE_BUCKET_NAME": services["TEST_S3_BUCKET"],
        "AWS_S3_ENDPOINT_URL": services["TEST_S3_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": services["TEST_S3_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": services["TEST_S3_SECRET_ACCESS_KEY"],
        "AWS_S3_REGION_NAME": services["TEST_S3_REGION"],
        "AWS_S3_LOCATION": f"load-{tag}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    return Stack(services_dir=Path(services_dir), tmp=tmp, database=f"load_{tag}", env=env,
                 base_url=f"http://127.0.0.1:{port}", tag=tag)


def stack_start(stack: Stack, *, volunteers: int, seed_photos: int, web_workers: int, worker_concurrency: int) -> None:
    """Create the database, migrate, start gunicorn and the light worker, seed; wait until both work.

    On a failure part-way the caller still calls ``stack_stop``, which undoes what was done.
    """
    env, tmp, database = stack.env, stack.tmp, stack.database
    (tmp / "var" / "static").mkdir(parents=True)  # whitenoise warns on every start without it
    began = time.perf_counter()
    with stack.pg_connect(admin=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    stack.redis_clear()
    _manage(env, "migrate", "-v", "0")
    stack.timings["migrate_s"] = round(time.perf_counter() - began, 1)

    # Started before the seed, so they boot while it runs.
    stack.gunicorn = _spawn(
        ["gunicorn", "config.wsgi:application", "--workers", str(web_workers), "--worker-class", "sync",
         "--bind", stack.base_url.removeprefix("http://"), "--log-level", "warning", "--timeout", "60"],
        env=env, log=tmp / "gunicorn.log",
    )
    stack.worker = _spawn(
        ["celery", "-A", "config", "worker", "--queues", "light", "--pool", "prefork",
         "--concurrency", str(worker_concurrency), "--hostname", f"load-{stack.tag}@%h", "--without-gossip",
         "--without-mingle", "--loglevel", "WARNING"],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"}, log=tmp / "worker.log",
    )
    began = time.perf_counter()
    preprocessing = {"input_size": 32, "resize": 36}
    seed_input = {
        "project": PROJECT, "labels": list(LABELS), "volunteers": volunteers, "preprocessing": preprocessing,
        "onnx_hex": tiny_onnx_classifier(labels=len(LABELS), input_size=preprocessing["input_size"]).hex(),
        "photos_hex": [p.hex() for p in jpegs_from_photos(seed_photos, size=(800, 600), offset=100)],
    }
    (tmp / "seed.json").write_text(json.dumps(seed_input))
    out = _manage({**env, "LOAD_SEED": str(tmp / "seed.json")}, "shell", "-c", SEED_SCRIPT)
    stack.seed = json.loads(next(line for line in out.splitlines() if line.startswith("LOAD "))[5:])
    stack.timings["seed_s"] = round(time.perf_counter() - began, 1)

    began = time.perf_counter()
    _wait_for_web(stack)
    # The worker works once it has scored every seed photo (they were queued on approval).
    _wait_until(lambda: stack_unscored(stack, None) == 0, seconds=120, what="the light worker scoring the seed photos",
                stack=stack)
    stack.timings["ready_s"] = round(time.perf_counter() - began, 1)


def _manage(env: dict[str, str], *args: str) -> str:
    """Run a manage.py command; its output, or an error that shows its stderr."""
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"manage.py {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _spawn(module_args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``python -m <module_args>`` from the repository root, output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([PYTHON, "-m", *module_args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_for_web(stack: Stack) -> None:
    import requests

    def answers() -> bool:
        try:
            return requests.get(f"{stack.base_url}/bench/minimal", timeout=30).status_code == 200
        except requests.ConnectionError:
            return False

    _wait_until(answers, seconds=60, what="gunicorn", stack=stack)


def _wait_until(check, *, seconds: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        for name, process in (("gunicorn", stack.gunicorn), ("worker", stack.worker)):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{_log_tail(stack, name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds} s waiting for {what}\n{_log_tail(stack, 'worker')}")
        time.sleep(0.5)


def _log_tail(stack: Stack, name: str) -> str:
    path = stack.tmp / f"{name}.log"
    return path.read_text()[-3000:] if path.exists() else ""


def stack_unscored(stack: Stack, public_ids: list[str] | None) -> int:
    """Photos (all, or these) the worker has not scored yet: model_confidence is still empty."""
    with stack.pg_connect() as conn:
        if public_ids is None:
            row = conn.execute("SELECT count(*) FROM submissions_photo WHERE model_confidence IS NULL").fetchone()
        else:
            row = conn.execute("SELECT count(*) FROM submissions_photo WHERE model_confidence IS NULL "
                               "AND public_id::text = ANY(%s)", (public_ids,)).fetchone()
    return row[0]


def stack_queue_length(stack: Stack) -> int:
    """Messages waiting on the light queue (Redis list `light`)."""
    return stack.redis().llen("light")


def _process_stop(process: subprocess.Popen | None, *, seconds: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def stack_stop(stack: Stack) -> None:
    """Stop the processes, then remove what the run left on the shared servers (database, objects, queue)."""
    _process_stop(stack.gunicorn, seconds=30)
    _process_stop(stack.worker, seconds=60)
    try:
        s3, bucket = stack.s3(), stack.env["AWS_STORAGE_BUCKET_NAME"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=stack.env["AWS_S3_LOCATION"] + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        stack.redis_clear()
        with stack.pg_connect(admin=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')
    except Exception as exc:  # a cleanup failure must not hide the run's own result or error
        print(f"load: cleanup incomplete: {exc}", file=sys.stderr)
