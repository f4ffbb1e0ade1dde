"""Embedded broker benchmark: how fast the worker drains a burst of upload follow-ups.

Usage: .venv/bin/python bench/embedded_broker.py [--tasks 2000] [--cap 120] [--filesystem 1.0/1,0.05/1,default]

For each broker, in one run: a throwaway SQLite deployment in a temporary folder with
``--tasks`` photos whose follow-ups are pending; one Celery worker as scripts/run starts it
(queues light,training, concurrency 1, the platform's settings); then the burst: one process
queues ``training.tasks.photo_score_with_current_model`` for every photo (the real upload
follow-up task, through the real publish path; no model is published, so each task loads its
row, finds nothing to score with and clears the pending flag: the cheapest real follow-up,
what is measured is the broker). The drain time runs from the first task queued to the last
photo no longer pending (read from the database), capped at ``--cap`` seconds.

Brokers: kombu's filesystem transport (the embedded default) at each polling interval and
prefetch in ``--filesystem`` (PLATFORM_BROKER_POLL_SECONDS / PLATFORM_BROKER_PREFETCH; "1.0/1"
is what the embedded default had before, "default" what the settings say now), and Redis (a
throwaway redis-server on a free loopback port, the settings' Redis defaults) as the baseline. Prints a table and writes
bench/results/embedded_broker.json. Everything it starts is stopped in ``finally``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import RESULTS_DIR, fmt, table_print  # noqa: E402
from bench.update_checks import free_port, process_stop  # noqa: E402

PYTHON = sys.executable
RESULTS = RESULTS_DIR / "embedded_broker.json"

SETUP = """
from challenges.models import Label, Project
from submissions.models import Photo

project = Project.objects.create(slug="bench", title="Bench")
label = Label.objects.create(project=project, name="ants")
Photo.objects.bulk_create([
    Photo(project=project, label=label, width=1, height=1, source_format="jpeg", upload_sha256=f"{{i:064x}}",
          sha256=f"{{i:064x}}", phash="0" * 16, followups_pending=True)
    for i in range({tasks})
])
"""

ENQUEUE = """
import time
from submissions.models import Photo
from training.tasks import photo_score_with_current_model

ids = list(Photo.objects.filter(followups_pending=True).values_list("id", flat=True))
started = time.time()
for photo_id in ids:
    photo_score_with_current_model.delay(photo_id)
print("ENQUEUED", started, time.time())
"""

def manage(env: dict, *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def pending_count(env: dict) -> int:
    """Photos still waiting for their follow-up (a sqlite3 read: cheaper than a Django process)."""
    import sqlite3

    with sqlite3.connect(Path(env["PLATFORM_VAR_DIR"]) / "platform.sqlite3", timeout=30) as db:
        return db.execute("SELECT COUNT(*) FROM submissions_photo WHERE followups_pending").fetchone()[0]


def measure(name: str, *, tmp: Path, tasks: int, cap: float, overrides: dict[str, str]) -> dict:
    """One broker configuration: set up, start the worker, queue the burst, wait for the drain."""
    var = tmp / name.replace(" ", "-").replace("=", "")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "CELERY_", "DATABASE_", "CACHE_"))},
        "PLATFORM_ENV_FILE": "", "PLATFORM_VAR_DIR": str(var), "DJANGO_SECRET_KEY": "bench-only",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]),
        "OMP_NUM_THREADS": "1", **overrides,
    }
    manage(env, "migrate", "-v", "0")
    manage(env, "shell", "-c", SETUP.format(tasks=tasks))
    log = open(var / "worker.log", "w+")
    worker = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "--queues", "light,training", "--concurrency", "1",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while "ready." not in (var / "worker.log").read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name}: the worker did not start:\n{(var / 'worker.log').read_text()[-3000:]}")
            time.sleep(0.2)
        load = os.getloadavg()[0]
        out = manage(env, "shell", "-c", ENQUEUE)
        _, first, last = next(line for line in out.splitlines() if line.startswith("ENQUEUED")).split()
        first, last = float(first), float(last)
        while True:
            left = pending_count(env)
            now = time.time()
            if left == 0 or now - first > cap:
                break
            time.sleep(0.2)
    finally:
        process_stop(worker)
        log.close()
    done = tasks - left
    seconds = now - first
    return {
        "broker": name, "tasks": tasks, "done": done, "drained": left == 0,
        "enqueue_seconds": round(last - first, 2), "drain_seconds": round(seconds, 2),
        "tasks_per_second": round(done / seconds, 1), "load_average_before": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a configuration may take at most")
    parser.add_argument("--filesystem", default="1.0/1,default",
                        help="filesystem configurations to measure: POLL_SECONDS/PREFETCH, or default (the settings')")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp_name:
        tmp = Path(tmp_name)
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            configurations = [("redis", {"CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0"})]
            for choice in args.filesystem.split(","):
                if choice == "default":
                    label, extra = "filesystem, settings' default", {}
                else:
                    poll, prefetch = choice.split("/")
                    label = f"filesystem, poll {poll} s, prefetch {prefetch}"
                    extra = {"PLATFORM_BROKER_POLL_SECONDS": poll, "PLATFORM_BROKER_PREFETCH": prefetch}
                configurations.append((label, {"CELERY_BROKER_URL": "filesystem://", **extra}))
            for name, overrides in configurations:
                print(f"  {name}: {args.tasks} follow-ups ...", flush=True)
                rows.append(measure(name, tmp=tmp, tasks=args.tasks, cap=args.cap, overrides=overrides))
                print(f"    {rows[-1]}", flush=True)
        finally:
            process_stop(redis)

    baseline = rows[0]["tasks_per_second"]
    table_print(
        [(r["broker"], f"{r['done']}/{r['tasks']}", fmt(r["enqueue_seconds"], ".1f"), fmt(r["drain_seconds"], ".1f"),
          fmt(r["tasks_per_second"], ".1f"), fmt(r["tasks_per_second"] / baseline, ".2f"),
          "yes" if r["drained"] and r["drain_seconds"] < 60 else "NO")
         for r in rows],
        header=("broker", "done", "enqueue s", "drain s", "tasks/s", "x redis", "< 60 s"),
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "embedded_broker", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": stdlib_platform.python_version()},
        "tasks": args.tasks, "cap_seconds": args.cap, "rows": rows,
    }, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
