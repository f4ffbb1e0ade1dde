"""Update-check benchmark: what every installed app's poll costs, against the cheapest baselines.

Usage: .venv/bin/python bench/update_checks.py [--duration 10] [--connections 32] [--threads 2] [--rounds 1]

1. Installs wrk and nginx with apt-get if they are missing.
2. Builds a throwaway deployment in a temporary folder: SQLite (migrated), local storage,
   a project, an app key, a published version with one model file, released on "stable"
   with ``mobile_api.services.release_promote`` (which writes the static manifest to
   storage, ``manifests/<model>/<channel>.json``).
3. Starts gunicorn (2 sync workers, bench/bench_settings.py: production settings plus a
   minimal JSON view, DJANGO_DEBUG off, PLATFORM_UPDATE_LOCAL_TTL at its default) and
   nginx (a generated config serving storage's manifests/ and a plain file) on loopback.
4. Runs wrk (``--latency``) for ``--duration`` seconds against each target, after a short
   warm-up, one at a time, in one run:

   | target | its baseline |
   |---|---|
   | Django: minimal JSON view | (baseline) |
   | Django: update check, 200 (no If-None-Match) | minimal JSON view |
   | Django: update check, 304 (If-None-Match) | minimal JSON view |
   | nginx: plain file (same bytes as the manifest) | (baseline) |
   | nginx: static manifest | plain file |

   Targets: the update check at >= 0.8x the minimal view's requests/s with p99 < 20 ms;
   the static manifest at >= 0.8x nginx's plain file.

Prints a table and writes bench/results/update_checks.json. wrk, gunicorn and nginx share
the machine's cores, so ratios within the run are the figures to compare, not absolutes.
With ``--rounds N`` the targets are measured N times, interleaved, and medians reported
(the per-round ratio uses that round's baseline). Everything it starts is stopped in
``finally``. Takes about rounds x 5 x (duration + 2) seconds plus ~15 s of set-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import RESULTS_DIR, fmt, table_print  # noqa: E402
from bench._procs import children  # noqa: E402

PYTHON = sys.executable
RESULTS = RESULTS_DIR / "update_checks.json"
MODEL = "bench"
INSTALL_ID = "bench-install-0001"
QUERY = f"install_id={INSTALL_ID}&app_version=2.3.0&platform=android&formats=onnx,pte"
MIN_RATIO = 0.8
MAX_P99_MS = 20.0
WARM_UP_S = 2

SETUP_SCRIPT = f"""
import hashlib, os
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from challenges.models import Project
from mobile_api.services import app_key_create, channel_defaults_ensure, release_promote, static_manifest_name
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun
from training.ml.config import Preprocessing
import datetime as dt
project = Project.objects.create(slug="{MODEL}", title="Bench")
# A huge limit, not none: the per-install counter is part of what a real poll costs.
_, key = app_key_create(name="Bench app", rate_limit_per_minute=1_000_000_000)
snapshot = DatasetSnapshot.objects.create(project=project, manifest_sha256="0" * 64, manifest={{}},
                                          label_counts={{}}, photo_count=0)
run = TrainingRun.objects.create(project=project, night=dt.date(2026, 12, 1), trigger="manual", status="succeeded")
version = ModelVersion.objects.create(project=project, version=1, run=run, snapshot=snapshot, labels=["ants", "bees"],
                                      preprocessing=Preprocessing().to_manifest(), metrics={{"accuracy": 0.94}})
payload = os.urandom(3_500_000)  # the size of an int8 MobileNetV2
name = default_storage.save("models/{MODEL}/v1/{MODEL}-v1-int8.onnx", ContentFile(payload))
ModelArtifact.objects.create(version=version, format="onnx", variant="int8", precision="int8", recommended=True,
                             file=name, size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                             preprocessing=Preprocessing().to_manifest(), measurements={{"accuracy": 0.94}},
                             verification={{}})
(stable,) = [c for c in channel_defaults_ensure(project=project) if c.name == "stable"]
release_promote(channel=stable, version=version, reason="bench")
print("BENCH", key, default_storage.path(static_manifest_name(model="{MODEL}", channel="stable")))
"""

NGINX_CONF = """
worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        # The published channel manifests, straight from storage's folder.
        location /manifests/ {{
            root {media};
            types {{ application/json json; }}
            default_type application/json;
            etag on;
            add_header Cache-Control "public, max-age=60, stale-while-revalidate=300";
            add_header Access-Control-Allow-Origin "*";
        }}
        # Baseline: the same bytes with nothing configured.
        location /plain/ {{
            root {tmp};
        }}
    }}
}}
"""


def tools_ensure() -> None:
    """wrk and nginx from Debian when missing (the only installs this bench makes)."""
    missing = [tool for tool, path in (("wrk", "wrk"), ("nginx", "nginx")) if not shutil.which(path)
               and not Path(f"/usr/sbin/{path}").exists()]
    if missing:
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, timeout=600,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, *, headers: dict | None = None, seconds: float = 30):
    """The first answer from ``url`` (a server that is still starting refuses connections)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            # Generous: a worker's first request imports the whole stack.
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30)
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{url}: {exc.code} {exc.read()[:300]!r}") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {seconds} s") from None
            time.sleep(0.2)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def wrk_parse(output: str) -> dict:
    """Requests/s, latency percentiles (ms), counts and errors from ``wrk --latency`` output."""
    percentiles = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.M)}
    requests = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "requests": int(requests.group(1)) if requests else None,
        "p50_ms": percentiles.get(50), "p90_ms": percentiles.get(90), "p99_ms": percentiles.get(99),
        "non_2xx_3xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes: what serving cost, whatever else runs on the machine."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def wrk_run(url: str, *, headers: dict, duration: int, connections: int, threads: int, server: list[int]) -> dict:
    """Warm up, then measure one target; a wrk failure stops the bench (bounded by timeouts).

    Besides wrk's figures: the server processes' CPU per request, which neighbours on the
    shared cores inflate far less than they inflate requests/s.
    """
    command = ["wrk", f"-t{threads}", f"-c{connections}", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    subprocess.run([*command, f"-d{WARM_UP_S}s", url], check=True, capture_output=True, timeout=WARM_UP_S + 30)
    cpu_before = cpu_seconds(server)
    out = subprocess.run([*command, f"-d{duration}s", url], check=True, capture_output=True, text=True,
                         timeout=duration + 30).stdout
    cpu = cpu_seconds(server) - cpu_before
    parsed = wrk_parse(out)
    # wrk's count misses requests in flight when it stops; over 10 s that is noise.
    parsed["server_cpu_us_per_request"] = round(cpu / parsed["requests"] * 1e6, 1) if parsed["requests"] else None
    return {**parsed, "raw": out}


def process_stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def measure(args, tmp: Path) -> tuple[list[dict], dict]:
    """Set up, start the servers, run every target; always stop the servers."""
    django_port, nginx_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.bench_settings",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
        "DJANGO_DEBUG": "0",
        "PLATFORM_ENV_FILE": "",
        "PLATFORM_VAR_DIR": str(tmp),
        "STORAGE_BACKEND": "local",
        "PLATFORM_LOG_LEVEL": "WARNING",
        "PLATFORM_BASE_URL": f"http://127.0.0.1:{django_port}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]),
    }
    env.pop("PLATFORM_UPDATE_LOCAL_TTL", None)  # its default, as deployed
    (tmp / "static").mkdir()  # whitenoise warns on every start without it
    tmp.chmod(0o755)  # nginx's workers run as an unprivileged user and must read storage
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300)
    out = subprocess.run([PYTHON, "manage.py", "shell", "-c", SETUP_SCRIPT], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    _, key, manifest_path = next(line for line in out.splitlines() if line.startswith("BENCH")).split()
    manifest_path = Path(manifest_path)
    media = manifest_path.parents[2]  # <media>/manifests/<model>/<channel>.json
    (tmp / "plain").mkdir()
    shutil.copyfile(manifest_path, tmp / "plain" / "manifest.json")
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, media=media, port=nginx_port))

    gunicorn = nginx = None
    try:
        gunicorn = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "config.wsgi:application", "--workers", "2", "--worker-class", "sync",
             "--bind", f"127.0.0.1:{django_port}", "--log-level", "warning", "--timeout", "60"],
            cwd=ROOT, env=env,
        )
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")])
        django, static = f"http://127.0.0.1:{django_port}", f"http://127.0.0.1:{nginx_port}"
        update_url = f"{django}/api/mobile/v1/models/{MODEL}/update?{QUERY}"
        wait_for(f"{django}/bench/minimal")
        first = wait_for(update_url, headers={"X-App-Key": key})
        etag, body = first.headers["ETag"], json.loads(first.read())
        assert body["version"] == 1, body
        wait_for(f"{static}/manifests/{MODEL}/stable.json")

        key_header = {"X-App-Key": key}
        targets = [
            ("django minimal JSON view", f"{django}/bench/minimal", {}, None),
            ("django update check 200", update_url, key_header, "django minimal JSON view"),
            ("django update check 304", update_url, {**key_header, "If-None-Match": etag}, "django minimal JSON view"),
            ("nginx plain file", f"{static}/plain/manifest.json", {}, None),
            ("nginx static manifest", f"{static}/manifests/{MODEL}/stable.json", {}, "nginx plain file"),
        ]
        # Rounds interleave the targets, so a neighbour's burst of CPU hits every target
        # alike instead of one; each round's ratio uses that round's baseline.
        servers = {"django": children(gunicorn.pid), "nginx": children(nginx.pid)}
        rounds: list[dict[str, dict]] = []
        for number in range(args.rounds):
            measured = {}
            for name, url, headers, _ in targets:
                load = os.getloadavg()[0]
                result = wrk_run(url, headers=headers, duration=args.duration, connections=args.connections,
                                 threads=args.threads, server=servers[name.split()[0]])
                measured[name] = {**result, "load_before": round(load, 2)}
                print(f"  round {number + 1}: {name}: {result['requests_per_s']:.0f} req/s, "
                      f"p99 {fmt(result['p99_ms'], '.2f')} ms, {fmt(result['server_cpu_us_per_request'], '.0f')} us "
                      f"server CPU/request (load average before {load:.1f})", flush=True)
            rounds.append(measured)
        rows = [{"target": name, "url": url.replace(key, "<key>"), "baseline": baseline,
                 "rounds": [r[name] for r in rounds]} for name, url, headers, baseline in targets]
        sizes = {"update_200_body_bytes": len(json.dumps(body, separators=(",", ":"))),
                 "static_manifest_bytes": manifest_path.stat().st_size}
    finally:
        process_stop(nginx)
        process_stop(gunicorn)
    return rows, sizes


def verdicts(rows: list[dict]) -> None:
    """Per target: median figures over the rounds, the median of the per-round ratios to its
    baseline, and whether it meets its target (no errors, and the p99 bound for the update check)."""
    by_name = {row["target"]: row for row in rows}
    for row in rows:
        samples = row["rounds"]
        for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request"):
            row[key] = statistics.median(s[key] for s in samples)
        row["errors"] = sum(s["non_2xx_3xx"] + s["socket_errors"] for s in samples)
        base = by_name.get(row["baseline"])
        if base is None:
            row["ratio"] = row["cpu_ratio"] = row["target_met"] = row["target_met_cpu"] = None
            continue
        row["ratio"] = statistics.median(s["requests_per_s"] / b["requests_per_s"]
                                         for s, b in zip(samples, base["rounds"]))
        # Requests per CPU-second relative to the baseline: the capacity ratio on idle cores.
        row["cpu_ratio"] = statistics.median(b["server_cpu_us_per_request"] / s["server_cpu_us_per_request"]
                                             for s, b in zip(samples, base["rounds"]))
        met = row["ratio"] >= MIN_RATIO and row["errors"] == 0
        if row["target"].startswith("django update"):
            met = met and row["p99_ms"] < MAX_P99_MS
        row["target_met"] = met
        # The same ratio from CPU per request: what the target means once neighbours leave the cores.
        row["target_met_cpu"] = row["cpu_ratio"] >= MIN_RATIO and row["errors"] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per target (after a warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all targets (medians are reported)")
    args = parser.parse_args()
    if not 1 <= args.duration <= 120 or not 1 <= args.rounds <= 10:
        raise SystemExit("--duration must be 1..120 seconds and --rounds 1..10")

    tools_ensure()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="update-bench-") as tmp:
        rows, sizes = measure(args, Path(tmp))
    verdicts(rows)

    result = {
        "machine": {"cpus": os.cpu_count(), "python": stdlib_platform.python_version(),
                    "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
                    "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()},
        "settings": {"duration_s": args.duration, "rounds": args.rounds, "connections": args.connections,
                     "wrk_threads": args.threads,
                     "gunicorn": "2 sync workers", "min_ratio": MIN_RATIO, "max_p99_ms": MAX_P99_MS, **sizes},
        "rows": [{**row, "rounds": [{k: v for k, v in r.items() if k != "raw"} for r in row["rounds"]]}
                 for row in rows],
        "wrk_output": {row["target"]: [r["raw"] for r in row["rounds"]] for row in rows},
        "total_s": round(time.perf_counter() - began, 1),
        "max_load_average": max(r["load_before"] for row in rows for r in row["rounds"]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    table_print(
        [(row["target"], f"{row['requests_per_s']:.0f}", fmt(row["p50_ms"], ".2f"), fmt(row["p99_ms"], ".2f"),
          fmt(row["ratio"], ".2f"), fmt(row["server_cpu_us_per_request"], ".0f"), fmt(row["cpu_ratio"], ".2f"),
          {None: "-", True: "yes", False: "NO"}[row["target_met"]],
          {None: "-", True: "yes", False: "NO"}[row["target_met_cpu"]])
         for row in rows],
        header=("target", "req/s", "p50 ms", "p99 ms", "x baseline", "CPU us/req", "x baseline (CPU)",
                "target met", "met (CPU)"),
    )
    print(f"targets: update check >= {MIN_RATIO}x the minimal view's req/s with p99 < {MAX_P99_MS:.0f} ms; "
          f"static manifest >= {MIN_RATIO}x nginx's plain file. CPU us/req: the server processes' CPU per request; "
          f"x baseline (CPU) is the capacity ratio it implies")
    busiest = max(r["load_before"] for row in rows for r in row["rounds"])
    print(f"highest load average before a target: {busiest:.1f} on {os.cpu_count()} cores")
    if busiest > (os.cpu_count() or 1):
        print("WARNING: other processes competed for the cores; requests/s ratios and p99 are unreliable "
              "(identical files served by nginx have differed by 40% here). Compare the CPU columns.")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
