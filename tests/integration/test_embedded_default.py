"""The embedded default as a newcomer runs it: separate processes, as scripts/run starts them.

The setup: an .env made from .env.example, a migrated SQLite database under its own var
folder, the demo (project, app key in var/demo-app-key.txt) and a published model on
`stable`, gunicorn (2 workers) bound where `manage.py run_info --bind` says.

- The reference client, run by bash with the exact line `manage.py run_info` printed,
  downloads and classifies; again with an .env of an earlier run whose base URL said localhost.
- A release and a rollback made by another process (a command, as the worker's publish is)
  reach every poll within PLATFORM_UPDATE_LOCAL_TTL: the cache is shared.

No server needed; each test takes 25-70 s (migrations and gunicorn starts on a loaded machine).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
from challenges.models import Project
from mobile_api.services import channel_defaults_ensure, release_promote
from tests.integration.test_client_e2e import publish, tiny_classifier

project = Project.objects.get(slug="ants-bees")
version = publish(project, 1, tiny_classifier())
stable = next(c for c in channel_defaults_ensure(project=project) if c.name == "stable")
release_promote(channel=stable, version=version, reason="run command test")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def env_file_set(path: Path, name: str, value: str) -> None:
    text = re.sub(rf"^{name}=.*$", f"{name}={value}", path.read_text(), flags=re.M)
    path.write_text(text)


@pytest.fixture
def newcomer(tmp_path, hymenoptera):
    """A checkout after scripts/run's setup steps, in tmp_path: (environment, .env, manage.py runner, a val photo)."""
    env_file = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env_file)  # scripts/run: sed on .env.example, secret filled in
    env_file_set(env_file, "DJANGO_SECRET_KEY", "run-command-test")
    env_file_set(env_file, "PLATFORM_VAR_DIR", str(tmp_path / "var"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PLATFORM_", "DJANGO_", "DATABASE_", "CACHE_", "CELERY_", "AWS_", "STORAGE_"))}
    env.update(PLATFORM_ENV_FILE=str(env_file), PYTHONPATH=f"platform{os.pathsep}.", HOME=str(tmp_path / "home"),
               OMP_NUM_THREADS="1")
    photos = tmp_path / "photos"
    for label in ("ants", "bees"):
        (photos / label).mkdir(parents=True)
        for photo in sorted((hymenoptera / "train" / label).glob("*.jpg"))[:2]:
            shutil.copy(photo, photos / label / photo.name)

    def manage(*args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    manage("migrate", "--noinput")
    manage("demo_setup", "--photos", str(photos), "--no-train")
    manage("shell", "-c", SETUP)
    return env, env_file, manage, next((hymenoptera / "val" / "bees").glob("*.jpg"))


@contextmanager
def gunicorn(env: dict, manage, tmp_path: Path) -> Iterator[str]:
    """gunicorn as scripts/run starts it (2 workers, bound where run_info says); yields its address."""
    bind = manage("run_info", "--bind").strip()
    log = open(tmp_path / f"gunicorn-{bind.replace(':', '-')}.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", bind, "--workers", "2"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                requests.get(f"http://{bind}/healthz", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert server.poll() is None and time.monotonic() < deadline, log.read()
                time.sleep(0.2)
        yield f"http://{bind}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def serve_and_run_the_printed_command(env: dict, manage, tmp_path: Path, photo: Path) -> subprocess.CompletedProcess:
    """The banner's client line through bash, from the checkout, against gunicorn."""
    banner = manage("run_info")
    (line,) = [line.strip() for line in banner.splitlines() if "mobile_api/client.py" in line]
    with gunicorn(env, manage, tmp_path):
        command = line.replace(".venv/bin/python", sys.executable).replace("PHOTO.jpg", str(photo))
        return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_printed_client_command_downloads_and_classifies(newcomer, tmp_path):
    env, env_file, manage, photo = newcomer
    example = re.search(r"^PLATFORM_BASE_URL=(.*)$", (ROOT / ".env.example").read_text(), re.M).group(1)
    assert example == "http://127.0.0.1:8000"
    # Port 8000 may be taken on a shared machine: the same host, a free port.
    port = free_port()
    env_file_set(env_file, "PLATFORM_BASE_URL", f"http://127.0.0.1:{port}")

    done = serve_and_run_the_printed_command(env, manage, tmp_path, photo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--base-url http://127.0.0.1:{port} " in done.args[2]
    assert "check: 200; version 1" in done.stdout, done.stdout + done.stderr
    assert re.search(r"download: v1 via full \(\d+ bytes\)", done.stdout), done.stdout
    assert re.search(r"\.jpg: (ants|bees) \[", done.stdout), done.stdout

    # An .env written by an earlier run says localhost: bind, banner and manifests follow it.
    port = free_port()
    env_file_set(env_file, "PLATFORM_BASE_URL", f"http://localhost:{port}")
    shutil.rmtree(tmp_path / "home")  # a fresh install
    done = serve_and_run_the_printed_command(env, manage, tmp_path, photo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--base-url http://localhost:{port} " in done.args[2]
    assert re.search(r"download: v1 via full \(\d+ bytes\)", done.stdout), done.stdout + done.stderr


PUBLISH_V2 = """
from challenges.models import Project
from mobile_api.models import Channel
from mobile_api.services import release_promote
from tests.integration.test_client_e2e import publish, tiny_classifier

project = Project.objects.get(slug="ants-bees")
version = publish(project, 2, tiny_classifier(nudge=50))
release_promote(channel=Channel.objects.get(project=project, name="stable"), version=version, reason="v2")
"""

ROLL_BACK_V2 = """
from mobile_api.models import Release
from mobile_api.services import release_rollback

release_rollback(release=Release.objects.get(channel__name="stable", version__version=2), reason="withdrawn")
"""


def test_a_release_and_a_rollback_by_another_process_reach_every_poll(newcomer, tmp_path):
    env, env_file, manage, _ = newcomer
    env_file_set(env_file, "PLATFORM_BASE_URL", f"http://127.0.0.1:{free_port()}")
    ttl = float(re.search(r"^PLATFORM_UPDATE_LOCAL_TTL=(.*)$", env_file.read_text(), re.M).group(1))
    key = (tmp_path / "var" / "demo-app-key.txt").read_text().strip()

    with gunicorn(env, manage, tmp_path) as url:
        def versions(n: int) -> list[int | None]:
            """What n fresh installs are offered (both web workers answer some of them)."""
            offered = []
            for _ in range(n):
                response = requests.get(
                    f"{url}/api/mobile/v1/models/ants-bees/update",
                    params={"install_id": uuid.uuid4().hex, "app_version": "1.0.0", "platform": "android",
                            "formats": "onnx"},
                    headers={"X-App-Key": key}, timeout=30,
                )
                assert response.status_code == 200, response.text
                offered.append(response.json()["version"])
            return offered

        assert versions(30) == [1] * 30  # both workers have v1 memoised and cached

        manage("shell", "-c", PUBLISH_V2)  # another process, as the worker's nightly publish is
        time.sleep(ttl)
        assert versions(12) == [2] * 12

        manage("shell", "-c", ROLL_BACK_V2)  # the staff API's rollback in another process
        time.sleep(ttl)
        assert versions(12) == [1] * 12


def test_the_embedded_worker_drains_a_burst_of_follow_ups_without_a_poll_per_task(tmp_path):
    """bench/embedded_broker.py's measurement, 100 tasks: kombu's defaults took a second a task (100 s)."""
    from bench.embedded_broker import measure

    row = measure("filesystem", tmp=tmp_path, tasks=100, cap=90, overrides={"CELERY_BROKER_URL": "filesystem://"})

    assert row["drained"], row
    assert row["drain_seconds"] < 30, row  # 25-30 tasks/s on a machine loaded 8x (README, "Embedded broker")
