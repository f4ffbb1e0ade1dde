"""Real processes for fault tests: Celery workers, beat and a web server on the loopback servers.

Each process runs from the repo root with only the environment a test gives it (never a
developer's .env), talks to the test database, the test Redis and the test's S3 prefix,
and logs to a file the test reads (what a worker did is in its log: received, succeeded,
returned). ``Processes`` stops whatever is still running when the test ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def process_env(services, *, s3_prefix: str, var_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a platform process on the test servers; ``overrides`` are settings."""
    from django.db import connection

    db = connection.settings_dict
    return {
        **os.environ,
        **services.storage_env(prefix=s3_prefix),
        "PYTHONPATH": f"platform{os.pathsep}.",
        "DJANGO_SETTINGS_MODULE": "config.settings",  # production settings, not the tests'
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": services.redis_url,
        "PLATFORM_VAR_DIR": str(var_dir),
        "DJANGO_SECRET_KEY": "fault-tests",
        "PLATFORM_ENV_FILE": "",  # only what the test sets
        **overrides,
    }


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout: float, count: int = 1) -> None:
        """Wait until ``text`` appears ``count`` times in the log; fail with the log's tail."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {count} x {text!r} in {timeout:.0f} s:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, as the kernel's out-of-memory killer or a crashed host would; then reap it."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Processes:
    """Starts platform processes for one test and stops them all at its end."""

    env: dict[str, str]
    log_dir: Path
    started: list[Process] = field(default_factory=list)

    def start(self, name: str, args: list[str], *, env: dict[str, str] | None = None) -> Process:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "w") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", *args], cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
            )
        process = Process(name=name, popen=popen, log_path=log_path)
        self.started.append(process)
        return process

    def worker(self, name: str, *, queues: str, timeout: float = 90) -> Process:
        """A worker as deploy/ runs one (solo pool: tasks run in the worker process itself)."""
        process = self.start(name, [
            "celery", "-A", "config", "worker", "--pool", "solo", "--queues", queues, "--loglevel", "INFO",
            "--hostname", f"{name}-{os.getpid()}@{socket.gethostname()}", "--without-gossip", "--without-mingle",
        ])
        process.wait_for_log(" ready.", timeout=timeout)
        return process

    def beat(self, name: str, *, timeout: float = 60) -> Process:
        """Celery beat with a schedule file of its own (two beats by accident do not share one)."""
        process = self.start(name, [
            "celery", "-A", "config", "beat", "--loglevel", "INFO",
            "--schedule", str(self.log_dir / f"{name}-schedule"),
        ])
        process.wait_for_log("beat: Starting", timeout=timeout)
        return process

    def web(self, *, timeout: float = 60) -> str:
        """gunicorn serving the platform (sync workers, as in production); returns its base URL."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = self.start("web", [
            "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "60",
        ])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(f"{url}/api/v1/photos/", timeout=10)  # the first request loads the URLconf
                return url
            except requests.RequestException:
                if process.popen.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not come up:\n{process.log()[-4000:]}")
                time.sleep(0.2)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()
            sys.stdout.write(f"--- {process.name} (last lines)\n{process.log()[-2500:]}\n")
