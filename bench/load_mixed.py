"""Mixed load on the real stack: uploads, update checks, leaderboard and gallery reads at once.

Usage: .venv/bin/python bench/load_mixed.py [--seconds 60] [--services-dir DIR] [--threads 8]

1. Servers: without --services-dir it starts PostgreSQL, Redis and radosgw on loopback with
   ``scripts/services.sh start <tmp>`` (needs root, like scripts/test) and stops them at the
   end; with DIR it uses the running ones of ``scripts/services.sh start DIR``.
2. Stack (bench/_load_stack.py): a new database on that PostgreSQL (migrated, dropped at the
   end), seeded with a project (ants, bees), today's challenge, volunteers with API tokens,
   approved photos (points on the leaderboard; half of them featured in the gallery), an app
   key and a published release on "stable" with a real ONNX file. gunicorn (sync workers,
   production settings with DEBUG off, Redis cache, S3 storage under a fresh key prefix) and
   one Celery worker on the ``light`` queue, which scores every upload with that model.
3. Warm-up, not measured: every request type from all threads at once, twice (its uploads
   are checked like the others), so each gunicorn worker has imported what it needs. Baseline: the minimal Django view (bench/bench_urls.py) alone,
   from the same client threads, for a twelfth of --seconds (at least 2 s).
4. Load: ``--threads`` client threads (one requests.Session each) for ``--seconds``, each
   picking the next request from a fixed mix (MIX): uploads (unique JPEGs, round robin over
   the volunteers, an Idempotency-Key each, one retry with the same key after a network
   error), update checks (a new install: 200; a known install with If-None-Match: 304),
   the leaderboard API (day, week, all) and the gallery (the page, and a featured photo's
   thumbnail: 302 to a presigned S3 URL, followed). The upload throttle and daily quota
   keep their defaults (30/min, 200/day): the volunteers are many enough to stay below them.
   The app key's per-minute limit is raised (see SEED_SCRIPT): the polls are the load.
5. Memory: every second, the summed VmRSS of the light worker (main process and pool
   children) and of gunicorn (master and workers). "Stable": the least-squares growth of the
   floor (the lowest sample of each few-second window) over the second half of the load is
   below STABLE_GROWTH_MB; an upload in flight lifts RSS for a moment, a leak lifts the floor.
6. Afterwards: the worker's follow-ups drain (every accepted photo scored, the queue empty;
   bounded), then every upload answered 201 is checked: the API returns it for its volunteer,
   its row exists, the stored image on S3 has the row's sha256, its display copy and
   thumbnail exist. Anything missing is a lost upload.

Prints a table and writes bench/results/load_mixed.json. The load generator shares the
cores with the servers, so figures are for this machine at that moment: the baseline row
and the competing-processes line say how much room there was.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform as stdlib_platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, fmt, table_print  # noqa: E402
from bench._load_stack import (  # noqa: E402
    PROJECT,
    Stack,
    jpegs_from_photos,
    rss_mb,
    stack_create,
    stack_queue_length,
    stack_start,
    stack_stop,
    stack_unscored,
    with_unique_comment,
)

RESULTS = RESULTS_DIR / "load_mixed.json"
# Relative weights of the request types each client thread draws from: apps poll far more
# often than volunteers upload, and an upload costs the server about 50 reads.
MIX = {
    "upload": 6,
    "update check 200": 10,
    "update check 304": 44,
    "leaderboard API": 20,
    "gallery page": 10,
    "gallery thumbnail": 10,
}
# The answer each type should get; anything else (a 429, a 4xx) is shown in the statuses column.
EXPECTED = {"upload": 201, "update check 200": 200, "update check 304": 304, "leaderboard API": 200,
            "gallery page": 200, "gallery thumbnail": 200}
BASELINE = "minimal view (baseline)"
# A worker or web server whose RSS grows by less than this over the second half is "stable".
STABLE_GROWTH_MB = 16.0
UPLOAD_SIZE = (1600, 1200)  # a phone photo after the app's resize; bench/upload_ingest.py covers 12 MP
VOLUNTEERS = 100
TIMEOUT_S = 30
POLL_QUERY = "app_version=2.3.0&platform=android&formats=onnx"


@dataclass
class Sample:
    kind: str
    started: float  # seconds since the phase began
    seconds: float
    status: int | None  # None: no answer (connection error, timeout)
    error: str = ""


@dataclass
class Upload:
    public_id: str
    volunteer: int
    replayed: bool


@dataclass
class ClientState:
    """What one client thread remembers between requests."""

    samples: list[Sample] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)


class LoadClient:
    """Sends the mix's requests to a stack; each thread calls ``run`` with its own state."""

    def __init__(self, stack: Stack, *, photos: list[bytes]):
        self.stack = stack
        self.base = stack.base_url
        self.seed = stack.seed
        self.photos = photos
        self._counter = iter(range(10**9))
        self._lock = threading.Lock()
        self.installs: dict[str, str] = {}  # install id -> the ETag of its last answer
        self.senders = {
            BASELINE: self._minimal_view,
            "upload": self._upload,
            "update check 200": self._poll_new_install,
            "update check 304": self._poll_known_install,
            "leaderboard API": self._leaderboard,
            "gallery page": self._gallery_page,
            "gallery thumbnail": self._gallery_thumbnail,
        }

    def _next(self) -> int:
        with self._lock:
            return next(self._counter)

    def run(self, *, kinds: list[str], weights: list[int], seconds: float, rng: random.Random,
            state: ClientState, thread: int, count: int | None = None) -> None:
        """Send requests drawn from the mix until ``seconds`` have passed (or ``count`` were sent)."""
        import requests

        session = requests.Session()
        began = time.perf_counter()
        deadline = began + seconds
        while (now := time.perf_counter()) < deadline and (count is None or len(state.samples) < count):
            kind = rng.choices(kinds, weights)[0]
            try:
                status, error = self.senders[kind](session, state=state, thread=thread, rng=rng), ""
            except requests.RequestException as exc:
                status, error = None, type(exc).__name__
            state.samples.append(Sample(kind, now - began, time.perf_counter() - now, status, error))

    # --- the request types ------------------------------------------------------------

    def _minimal_view(self, session, **_) -> int:
        return session.get(f"{self.base}/bench/minimal", timeout=TIMEOUT_S).status_code

    def _upload(self, session, *, state: ClientState, **_) -> int:
        import requests

        number = self._next()
        volunteer = number % len(self.seed["tokens"])
        data = with_unique_comment(self.photos[number % len(self.photos)], f"load-{uuid.uuid4().hex}")
        headers = {"Authorization": f"Token {self.seed['tokens'][volunteer]}", "Idempotency-Key": uuid.uuid4().hex}
        form = {"challenge": str(self.seed["challenge"]), "label": ("ants", "bees")[number % 2]}
        for attempt in (1, 2):  # a client retries a lost answer with the same key
            try:
                response = session.post(f"{self.base}/api/v1/photos/", data=form, headers=headers,
                                        files={"image": ("phone.jpg", data, "image/jpeg")}, timeout=TIMEOUT_S)
                break
            except requests.RequestException:
                if attempt == 2:
                    raise
        if response.status_code == 201:
            state.uploads.append(Upload(response.json()["id"], volunteer,
                                        response.headers.get("Idempotent-Replayed") == "true"))
        return response.status_code

    def _poll(self, session, install: str, etag: str | None):
        headers = {"X-App-Key": self.seed["app_key"]}
        if etag:
            headers["If-None-Match"] = etag
        return session.get(f"{self.base}/api/mobile/v1/models/{PROJECT}/update?install_id={install}&{POLL_QUERY}",
                           headers=headers, timeout=TIMEOUT_S)

    def _poll_new_install(self, session, *, thread: int, **_) -> int:
        install = f"load-{thread:02d}-{self._next():08d}"
        response = self._poll(session, install, None)
        if response.status_code == 200:
            with self._lock:
                if len(self.installs) < 1000:
                    self.installs[install] = response.headers["ETag"]
        return response.status_code

    def _poll_known_install(self, session, *, thread: int, rng: random.Random, **_) -> int:
        with self._lock:
            known = list(self.installs.items())
        if not known:  # only before the first new install answered (the warm-up runs those first)
            return self._poll_new_install(session, thread=thread)
        install, etag = rng.choice(known)
        return self._poll(session, install, etag).status_code

    def _leaderboard(self, session, *, rng: random.Random, **_) -> int:
        period = rng.choice(("day", "week", "all"))
        return session.get(f"{self.base}/api/v1/projects/{PROJECT}/leaderboards/{period}/",
                           timeout=TIMEOUT_S).status_code

    def _gallery_page(self, session, **_) -> int:
        return session.get(f"{self.base}/gallery/", timeout=TIMEOUT_S).status_code

    def _gallery_thumbnail(self, session, *, rng: random.Random, **_) -> int:
        photo = rng.choice(self.seed["featured"])
        return session.get(f"{self.base}/photos/{photo}/thumbnail", timeout=TIMEOUT_S).status_code


def phase_run(client: LoadClient, *, mix: dict[str, int], seconds: float, threads: int, seed: int,
              count: int | None = None) -> tuple[list[Sample], list[Upload]]:
    """``threads`` clients drawing from ``mix`` for ``seconds`` (or ``count`` requests each);
    every sample and accepted upload."""
    kinds, weights = list(mix), list(mix.values())
    states = [ClientState() for _ in range(threads)]
    workers = [threading.Thread(target=client.run, kwargs={
        "kinds": kinds, "weights": weights, "seconds": seconds, "rng": random.Random(seed * 1000 + n),
        "state": states[n], "thread": n, "count": count}, daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 2 * TIMEOUT_S + 10)
    return [s for st in states for s in st.samples], [u for st in states for u in st.uploads]


def warm_up(client: LoadClient, *, threads: int, rounds: int = 2) -> list[Upload]:
    """Each request type from every thread at once, ``rounds`` times; the accepted uploads.

    A gunicorn worker imports most of the stack on its first requests of a kind (DRF,
    Pillow, imagehash, boto3) and opens its database connection; with as many requests in
    flight as threads, every worker gets some of each kind before anything is measured.
    """
    uploads = []
    for round_number in range(rounds):
        for kind in MIX:
            _, accepted = phase_run(client, mix={kind: 1}, seconds=2 * TIMEOUT_S, threads=threads,
                                    seed=100 + round_number, count=1)
            uploads += accepted
    return uploads


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values, or None without any."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def rows_from(samples: list[Sample], *, seconds: float, kinds: list[str]) -> list[dict]:
    """Per request type: count, requests/s, p50/p99 (ms), status histogram, 5xx, errors."""
    rows = []
    for kind in kinds:
        mine = [s for s in samples if s.kind == kind]
        latencies = [s.seconds * 1000 for s in mine]
        statuses = Counter(str(s.status) for s in mine if s.status is not None)
        rows.append({
            "type": kind, "requests": len(mine), "requests_per_s": round(len(mine) / seconds, 2),
            "expected_status": EXPECTED.get(kind, 200), "ok": statuses[str(EXPECTED.get(kind, 200))],
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies, default=None),
            "statuses": dict(sorted(statuses.items())),
            "5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
            "errors": dict(Counter(s.error for s in mine if s.status is None)),
        })
    return rows


# --- memory -----------------------------------------------------------------------------


class MemorySampler:
    """RSS of the light worker and of gunicorn (each a process tree), once a second, in a thread."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.samples: list[tuple[float, float, float]] = []  # (seconds, worker MB, web MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, rss_mb(self.stack.worker_pids()),
                                 rss_mb(self.stack.web_pids())))
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self, *, load_seconds: float, column: int) -> dict:
        """Start, max and end RSS over the load, and the growth of its floor over the second half.

        The floor is the lowest sample of each short window: an upload in flight lifts RSS by
        tens of MB for a moment (a decoded photo and its copies) and the allocator gives it
        back, while a leak lifts the floor. Its least-squares slope over the second half,
        times the half's length, is the growth compared with STABLE_GROWTH_MB.
        """
        during = [(t, s[column]) for s in self.samples if (t := s[0]) <= load_seconds]
        after = [s[column] for s in self.samples if s[0] > load_seconds]
        window = max(1.0, min(5.0, load_seconds / 8))
        floors: dict[int, tuple[float, float]] = {}
        for t, mb in during:
            slot = int(t // window)
            if slot not in floors or mb < floors[slot][1]:
                floors[slot] = (slot * window + window / 2, mb)
        half = [(t, mb) for t, mb in floors.values() if t >= load_seconds / 2]
        slope = None
        if len(half) >= 3:
            slope = statistics.linear_regression([t for t, _ in half], [mb for _, mb in half]).slope * 60
        growth = None if slope is None else slope * (load_seconds / 2) / 60
        return {
            "start_mb": round(during[0][1], 1), "max_mb": round(max(mb for _, mb in during), 1),
            "end_mb": round(during[-1][1], 1), "after_drain_mb": round(after[-1], 1) if after else None,
            "floor_window_s": window,
            "second_half_slope_mb_per_min": None if slope is None else round(slope, 2),
            "second_half_growth_mb": None if growth is None else round(growth, 2),
            "stable": growth is not None and growth < STABLE_GROWTH_MB,
            "samples": len(during),
        }


# --- who else used the cores --------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far (utime + stime)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return found


def cpu_pressure_us() -> int | None:
    """Microseconds in which some runnable task waited for a core (Linux PSI), or None without PSI."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def competition(before: dict, after: dict, *, groups: dict[str, set[int]], seconds: float) -> dict:
    """Cores each group of processes used during the load (the stack's parts, this client, everyone
    else), with the busiest other processes by name."""
    used = {pid: (after[pid][0], after[pid][1] - before.get(pid, (None, 0.0))[1]) for pid in after}
    ours = set().union(*groups.values())
    others = Counter()
    for pid, (name, cpu) in used.items():
        if pid not in ours:
            others[name] += cpu
    return {
        "cores": {group: round(sum(used[p][1] for p in pids if p in used) / seconds, 2) for group, pids in groups.items()},
        "other_cores": round(sum(others.values()) / seconds, 2),
        "busiest_others": [{"name": name, "cores": round(cpu / seconds, 2)}
                           for name, cpu in others.most_common(5) if cpu / seconds >= 0.02],
    }


# --- after the load ---------------------------------------------------------------------


def drain_wait(stack: Stack, uploads: list[Upload], *, seconds: float) -> dict:
    """Wait (at most ``seconds``) until the worker scored every accepted photo and its queue is empty."""
    ids = [u.public_id for u in uploads]
    began = time.perf_counter()
    while True:
        unscored, queued = stack_unscored(stack, ids), stack_queue_length(stack)
        if (unscored == 0 and queued == 0) or time.perf_counter() - began > seconds:
            return {"drained": unscored == 0 and queued == 0, "unscored": unscored, "queued": queued,
                    "seconds": round(time.perf_counter() - began, 1)}
        time.sleep(0.5)


def uploads_verify(stack: Stack, uploads: list[Upload]) -> dict:
    """Every accepted upload: the API returns it, its row exists, its three objects are on S3 (image by sha256)."""
    import requests
    from botocore.exceptions import ClientError

    s3, bucket = stack.s3(), stack.env["AWS_STORAGE_BUCKET_NAME"]
    session = requests.Session()
    with stack.pg_connect() as conn:
        rows = {str(r[0]): r[1:] for r in conn.execute(
            "SELECT public_id, image, display_image, thumbnail, sha256 FROM submissions_photo "
            "WHERE public_id::text = ANY(%s)", ([u.public_id for u in uploads],))}
    lost = []
    for upload in {u.public_id: u for u in uploads}.values():  # a replay names the same photo
        problem = ""
        answer = session.get(f"{stack.base_url}/api/v1/photos/{upload.public_id}/", timeout=TIMEOUT_S,
                             headers={"Authorization": f"Token {stack.seed['tokens'][upload.volunteer]}"})
        if answer.status_code != 200 or answer.json().get("id") != upload.public_id:
            problem = f"API answered {answer.status_code}"
        elif upload.public_id not in rows:
            problem = "no row"
        else:
            image, display, thumbnail, sha256 = rows[upload.public_id]
            try:
                body = s3.get_object(Bucket=bucket, Key=stack.s3_key(image))["Body"].read()
                if hashlib.sha256(body).hexdigest() != sha256:
                    problem = "stored image differs from its sha256"
                for name in (display, thumbnail):
                    s3.head_object(Bucket=bucket, Key=stack.s3_key(name))
            except ClientError as exc:
                problem = f"S3: {exc.response['Error']['Code']}"
        if problem:
            lost.append({"id": upload.public_id, "problem": problem})
    return {"accepted": len({u.public_id for u in uploads}), "checked": len(rows), "lost": len(lost),
            "lost_examples": lost[:10]}


# --- the run ----------------------------------------------------------------------------


def load_run(*, services_dir: Path, seconds: float, threads: int = 8, web_workers: int = 4,
             worker_concurrency: int = 2, drain_seconds: float = 120, seed_photos: int = 8, warm_up_rounds: int = 2,
             seed: int = 0) -> dict:
    """Prepare a stack on the servers of ``services_dir``, measure the baseline and the mix, check, clean up."""
    tmp = Path(tempfile.mkdtemp(prefix="load-mixed-"))
    stack = stack_create(services_dir=Path(services_dir), tmp=tmp)
    began = time.perf_counter()
    try:
        stack_start(stack, volunteers=VOLUNTEERS, seed_photos=seed_photos, web_workers=web_workers,
                    worker_concurrency=worker_concurrency)
        client = LoadClient(stack, photos=jpegs_from_photos(16, size=UPLOAD_SIZE))

        began_phase = time.perf_counter()
        warm_uploads = warm_up(client, threads=threads, rounds=warm_up_rounds)
        stack.timings["warm_up_s"] = round(time.perf_counter() - began_phase, 1)
        baseline_s = max(2.0, round(seconds / 12))
        base_samples, _ = phase_run(client, mix={BASELINE: 1}, seconds=baseline_s, threads=threads, seed=seed)
        baseline = rows_from(base_samples, seconds=baseline_s, kinds=[BASELINE])[0]

        memory = MemorySampler(stack)
        cpu_before, load_before, pressure_before = cpu_by_process(), os.getloadavg()[0], cpu_pressure_us()
        memory.start()
        samples, uploads = phase_run(client, mix=MIX, seconds=seconds, threads=threads, seed=seed)
        pressure = cpu_pressure_us()
        groups = {"gunicorn": set(stack.web_pids()), "light worker": set(stack.worker_pids()),
                  "servers": set(stack.service_pids()), "client": {os.getpid()}}
        competing = competition(cpu_before, cpu_by_process(), groups=groups, seconds=seconds)
        drain = drain_wait(stack, warm_uploads + uploads, seconds=drain_seconds)
        memory.stop()
        began_phase = time.perf_counter()
        verify = uploads_verify(stack, warm_uploads + uploads)
        stack.timings["verify_s"] = round(time.perf_counter() - began_phase, 1)
        rows = rows_from(samples, seconds=seconds, kinds=list(MIX))
        return {
            "machine": {"cpus": os.cpu_count(), "python": stdlib_platform.python_version()},
            "settings": {"seconds": seconds, "threads": threads, "mix": MIX, "gunicorn": f"{web_workers} sync workers",
                         "light_worker": f"prefork, concurrency {worker_concurrency}", "volunteers": VOLUNTEERS,
                         "upload_size": list(UPLOAD_SIZE), "baseline_s": baseline_s,
                         "stable_growth_mb": STABLE_GROWTH_MB,
                         "raised_limits": "app key: 1e9 polls/min (upload throttle and quota at their defaults)"},
            "baseline": baseline,
            "rows": rows,
            "total": {"requests": len(samples), "requests_per_s": round(len(samples) / seconds, 1),
                      "5xx": sum(r["5xx"] for r in rows),
                      "errors": sum(sum(r["errors"].values()) for r in rows),
                      # What serving cost whatever the neighbours did (CPU time, not wall time).
                      "gunicorn_cpu_ms_per_request": round(competing["cores"]["gunicorn"] * seconds * 1000
                                                           / max(1, len(samples)), 1)},
            "uploads": {**verify, "replayed": sum(u.replayed for u in warm_uploads + uploads)},
            "followups": drain,
            "memory": {"worker": memory.summary(load_seconds=seconds, column=1),
                       "web": memory.summary(load_seconds=seconds, column=2)},
            "competition": {**competing, "load_average_before": round(load_before, 2),
                            # Share of the load's wall time in which some runnable task waited for a core.
                            "cpu_pressure": None if pressure is None or pressure_before is None
                            else round(min(1.0, (pressure - pressure_before) / 1e6 / seconds), 2)},
            "timings": {**stack.timings, "total_s": round(time.perf_counter() - began, 1)},
        }
    finally:
        stack_stop(stack)
        shutil.rmtree(tmp, ignore_errors=True)


def report_print(result: dict) -> None:
    """The table, then the memory, lost-upload, follow-up and competition lines."""
    rows = [result["baseline"], *result["rows"]]
    table_print(
        [(r["type"], r["requests"], f"{r['requests_per_s']:.1f}", fmt(r["p50_ms"], ".1f"), fmt(r["p99_ms"], ".1f"),
          r["5xx"], sum(r["errors"].values()), " ".join(f"{c}:{n}" for c, n in r["statuses"].items()))
         for r in rows],
        header=("request type", "n", "req/s", "p50 ms", "p99 ms", "5xx", "errors", "statuses"),
    )
    total, uploads, drain = result["total"], result["uploads"], result["followups"]
    print(f"mixed load: {total['requests']} requests in {result['settings']['seconds']:.0f} s "
          f"({total['requests_per_s']} req/s) from {result['settings']['threads']} threads; "
          f"5xx: {total['5xx']}, network errors: {total['errors']}")
    print(f"uploads: {uploads['accepted']} accepted (201), lost: {uploads['lost']}"
          + (f" {uploads['lost_examples']}" if uploads["lost"] else ""))
    print(f"follow-ups: {'drained' if drain['drained'] else 'NOT drained'} {drain['seconds']} s after the load "
          f"(unscored {drain['unscored']}, queued {drain['queued']})")
    for name, label in (("worker", "light worker"), ("web", "gunicorn")):
        m = result["memory"][name]
        print(f"{label} RSS: start {m['start_mb']} MB, max {m['max_mb']} MB, end {m['end_mb']} MB, "
              f"floor over the second half {fmt(m['second_half_slope_mb_per_min'], '+.1f')} MB/min "
              f"({fmt(m['second_half_growth_mb'], '+.1f')} MB) -> {'stable' if m['stable'] else 'NOT stable'} "
              f"(bound: < {STABLE_GROWTH_MB:.0f} MB growth over the second half)")
    c = result["competition"]
    busiest = ", ".join(f"{o['name']} {o['cores']}" for o in c["busiest_others"]) or "none"
    ours = ", ".join(f"{group} {cores}" for group, cores in c["cores"].items())
    print(f"cores used: {ours}; other processes {c['other_cores']} (busiest: {busiest}); "
          f"load average before {c['load_average_before']} on {os.cpu_count()} cores; "
          f"some task waited for a core {fmt(c['cpu_pressure'], '.0%')} of the time")
    print(f"gunicorn CPU per request: {result['total']['gunicorn_cpu_ms_per_request']} ms (all types together)")
    print("seconds: " + ", ".join(f"{name.removesuffix('_s')} {value}" for name, value in result["timings"].items()))
    if c["other_cores"] > 0.25:  # measured during the load; the load average lags by a minute
        print("WARNING: other processes competed for the cores; throughput and p99 are lower than on a quiet machine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--services-dir", type=Path, help="servers already started by scripts/services.sh start DIR")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers")
    args = parser.parse_args()
    if not 5 <= args.seconds <= 600:
        raise SystemExit("--seconds must be 5..600")

    own_services = None
    if args.services_dir is None:
        own_services = Path(tempfile.mkdtemp(prefix="load-services-"))
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "start", str(own_services)], check=True, timeout=600)
    try:
        result = load_run(services_dir=args.services_dir or own_services, seconds=args.seconds, threads=args.threads,
                          web_workers=args.web_workers)
    finally:
        if own_services is not None:
            subprocess.run([str(ROOT / "scripts" / "services.sh"), "stop", str(own_services)], timeout=300)
            shutil.rmtree(own_services, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    report_print(result)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
