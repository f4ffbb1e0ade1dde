"""The web process of production (gunicorn, sync workers) on the test database, and a client
that sends uploads and reads to it from threads while a fault test breaks a server.

A separate process, not pytest-django's live_server: the workers keep their persistent
database connections and their boto3 clients across requests, exactly what a restart or an
outage breaks, and they read the S3 timeouts from the settings module, not from a fixture.
"""
from __future__ import annotations

import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from tests.integration.workers import process_env

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WebProcess:
    url: str
    pid: int

    def worker_pids(self) -> set[int]:
        """The master's live children: unchanged if no worker crashed or was replaced."""
        children = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.pid and fields[0] != "Z":
                children.add(int(stat.parent.name))
        return children


@contextmanager
def web_process(*, services, s3_prefix: str, tmp_path: Path, workers: int = 2) -> Iterator[WebProcess]:
    """gunicorn on a free loopback port, on this test's database and S3 prefix; its log is printed at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A fault test sends far more than a volunteer would; the throttle is tested elsewhere. The
    # follow-ups go to a broker on disk: no worker here, and none left waiting in the test Redis
    # for the next test's worker.
    full_env = process_env(services, s3_prefix=s3_prefix, var_dir=tmp_path / "web-var",
                           PLATFORM_UPLOAD_RATE="100000/min", CELERY_BROKER_URL="filesystem://")
    log = open(tmp_path / "web.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--timeout", "60", "--graceful-timeout", "5"],
        cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:  # any answer will do: an app's update check without a key (401)
                requests.get(f"{url}/api/mobile/v1/models/probe/update", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"gunicorn did not come up:\n{log.read()[-4000:]}") from None
                time.sleep(0.2)
        yield WebProcess(url=url, pid=process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        sys.stdout.write(log.read()[-3000:])
        log.close()


def noise_jpeg() -> bytes:
    """A small JPEG no other upload repeats (exact and near duplicates are refused or flagged)."""
    out = io.BytesIO()
    Image.frombytes("RGB", (64, 48), os.urandom(64 * 48 * 3)).save(out, format="JPEG", quality=90)
    return out.getvalue()


@dataclass
class Outcome:
    """One request as the client saw it."""

    kind: str  # "upload" or "read"
    started: float
    seconds: float
    status: int | None  # None: no answer within the client's timeout, or the connection failed
    retry_after: str | None = None
    error_code: str | None = None
    content_type: str = ""
    photo_id: str | None = None
    key: str | None = None
    data: bytes = b""
    failure: str = ""

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass
class Volunteer:
    """Where and as whom the client uploads."""

    url: str
    token: str
    challenge_id: int
    label: str = "bees"
    timeout: float = 30.0

    def upload(self, data: bytes | None = None, *, key: str | None = None) -> Outcome:
        """POST one photo with an Idempotency-Key (a retry sends the same bytes and key)."""
        data = data or noise_jpeg()
        key = key or uuid.uuid4().hex
        return _timed(
            "upload", key=key, data=data,
            send=lambda: requests.post(
                f"{self.url}/api/v1/photos/",
                data={"challenge": self.challenge_id, "label": self.label},
                files={"image": ("p.jpg", data, "image/jpeg")},
                headers={"Authorization": f"Token {self.token}", "Idempotency-Key": key},
                timeout=self.timeout,
            ),
        )

    def retry(self, refused: list[Outcome], *, threads: int = 3) -> list[Outcome]:
        """Send each refused upload again with its bytes and key, as a client obeying Retry-After does."""
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda o: self.upload(o.data, key=o.key), [o for o in refused if o.kind == "upload"]))

    def read(self, path: str) -> Outcome:
        return _timed("read", send=lambda: requests.get(f"{self.url}{path}", timeout=self.timeout))


def _timed(kind: str, *, send, key: str | None = None, data: bytes = b"") -> Outcome:
    started = time.monotonic()
    try:
        response = send()
    except requests.RequestException as exc:
        return Outcome(kind, started, time.monotonic() - started, None, key=key, data=data, failure=repr(exc))
    outcome = Outcome(
        kind, started, time.monotonic() - started, response.status_code,
        retry_after=response.headers.get("Retry-After"), content_type=response.headers.get("Content-Type", ""),
        key=key, data=data,
    )
    if outcome.content_type.startswith("application/json"):
        body = response.json()
        if isinstance(body, dict):
            outcome.error_code = (body.get("error") or {}).get("code")
            outcome.photo_id = body.get("id") if response.status_code == 201 else None
    return outcome


class Traffic:
    """Threads that each repeat one kind of request until stopped; every outcome is kept."""

    def __init__(self, *jobs) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(job,), daemon=True) for job in jobs]

    def _loop(self, job) -> None:
        while not self._stop.is_set():
            outcome = job()
            with self._lock:
                self.outcomes.append(outcome)
            time.sleep(0.05)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_for(self, predicate, *, timeout: float) -> bool:
        """Wait until predicate(outcomes so far) holds; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.1)
        return False


def seconds_summary(outcomes: list[Outcome]) -> dict[str, float]:
    """p50 and max answer time in seconds (0 when there are none)."""
    times = [o.seconds for o in outcomes]
    if not times:
        return {"p50": 0.0, "max": 0.0}
    return {"p50": round(statistics.median(times), 3), "max": round(max(times), 3)}
