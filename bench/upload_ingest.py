"""Upload ingest benchmark: the bare Pillow pipeline against uploads through the real stack.

Usage: .venv/bin/python bench/upload_ingest.py [--photos 8] [--repeats 5] [--clients 2]

1. Makes `--photos` 12-megapixel JPEGs (4000x3000, quality 92) by upscaling real photos
   from the ants/bees set, so they compress like photos rather than like flat colours.
2. In-process: times common.images.image_sanitize (decode with draft, orient, re-encode
   the private copy, the 1280 display copy and the 320 thumbnail, phash) per photo.
3. Over HTTP: starts gunicorn (2 sync workers) on a free loopback port with a temporary
   SQLite database and media folder, creates a volunteer, token, project and challenge,
   and POSTs every photo `--repeats` times from `--clients` threads. Each upload has
   different bytes (a unique JPEG comment segment, which the pipeline strips), so none is
   refused as an exact duplicate (repeats are flagged as near duplicates: still stored).
   Server CPU comes from the workers' /proc/<pid>/stat, peak RSS from VmHWM.

Prints a table and writes bench/results/upload_ingest.json. Takes about a minute.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform as stdlib_platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _procs import children

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RESULTS = ROOT / "bench" / "results" / "upload_ingest.json"
PHOTOS = Path(os.environ.get("PLATFORM_TEST_HYMENOPTERA", ROOT.parent / "shared" / "data" / "hymenoptera")) / "train"
CLK_TCK = os.sysconf("SC_CLK_TCK")

SETUP_SCRIPT = """
from challenges.models import Challenge, Label, Project
from challenges.selectors import project_today
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
project = Project.objects.create(slug="bench", title="Bench")
labels = [Label.objects.create(project=project, name=name) for name in ("ants", "bees")]
challenge = Challenge.objects.create(project=project, day=project_today(project=project), title="Bench")
challenge.labels.set(labels)
user = get_user_model().objects.create_user("bench-volunteer", password="x-" * 10)
print("BENCH", challenge.pk, Token.objects.create(user=user).key)
"""


def make_photos(count: int) -> list[bytes]:
    """`count` 4000x3000 JPEGs (quality 92) upscaled from real photos."""
    from PIL import Image

    sources = sorted(PHOTOS.glob("*/*.jpg"))[:: max(1, len(sorted(PHOTOS.glob('*/*.jpg'))) // count)][:count]
    if len(sources) < count:
        raise SystemExit(f"need {count} photos under {PHOTOS}")
    photos = []
    for path in sources:
        with Image.open(path) as image:
            big = image.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        big.save(out, format="JPEG", quality=92)
        photos.append(out.getvalue())
    return photos


def with_unique_comment(jpeg: bytes, tag: int) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, same pixels, no re-encode."""
    text = f"bench-variant-{tag}".encode()
    segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return jpeg[:2] + segment + jpeg[2:]


def bare_pipeline(photos: list[bytes]) -> dict:
    """image_sanitize in this process, one photo at a time: wall and CPU seconds per photo."""
    from django.conf import settings

    from common.images import image_sanitize

    image_sanitize(upload=io.BytesIO(photos[0]), size=len(photos[0]),  # warm-up (imports, caches)
                   max_bytes=settings.PLATFORM_UPLOAD_MAX_BYTES, max_pixels=settings.PLATFORM_UPLOAD_MAX_PIXELS)
    walls, cpus = [], []
    for data in photos:
        wall, cpu = time.perf_counter(), time.process_time()
        result = image_sanitize(upload=io.BytesIO(data), size=len(data),
                                max_bytes=settings.PLATFORM_UPLOAD_MAX_BYTES,
                                max_pixels=settings.PLATFORM_UPLOAD_MAX_PIXELS)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "photos": len(photos),
        "wall_s_per_photo_mean": statistics.mean(walls),
        "cpu_s_per_photo_mean": statistics.mean(cpus),
        "stored_sizes": [result.width, result.height],
        "bytes_in_mean": statistics.mean(len(p) for p in photos),
        "bytes_stored_last": {"image": len(result.content), "display": len(result.display), "thumbnail": len(result.thumbnail)},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def http_run(photos: list[bytes], *, repeats: int, clients: int, env: dict) -> dict:
    """Start gunicorn, upload every photo `repeats` times, stop it; return the measurements."""
    import requests

    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run([PYTHON, "manage.py", "shell", "-c", SETUP_SCRIPT], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    _, challenge_id, token = next(line for line in out.splitlines() if line.startswith("BENCH")).split()
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "config.wsgi:application", "--workers", "2", "--worker-class", "sync",
         "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT / "platform")},
    )
    base = f"http://127.0.0.1:{port}"
    session_local = threading.local()

    def session() -> requests.Session:
        if not hasattr(session_local, "s"):
            session_local.s = requests.Session()
            session_local.s.headers["Authorization"] = f"Token {token}"
        return session_local.s

    def upload(data: bytes) -> tuple[int, float]:
        start = time.perf_counter()
        response = session().post(f"{base}/api/v1/photos/", data={"challenge": challenge_id, "label": "ants"},
                                  files={"image": ("photo.jpg", data, "image/jpeg")}, timeout=120)
        return response.status_code, time.perf_counter() - start

    try:
        for _ in range(150):
            try:
                if requests.get(f"{base}/api/v1/photos/", timeout=10).status_code in (401, 403):
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise SystemExit("gunicorn did not start")
        workers = children(server.pid)
        # Warm-up: one upload per client thread so both workers have imported everything.
        with ThreadPoolExecutor(clients) as pool:
            warm = list(pool.map(upload, [with_unique_comment(photos[i % len(photos)], 10_000 + i) for i in range(2 * clients)]))
        assert all(code == 201 for code, _ in warm), warm
        payloads = [with_unique_comment(data, r * len(photos) + i) for r in range(repeats) for i, data in enumerate(photos)]
        cpu_before = {pid: cpu_seconds(pid) for pid in workers}
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(upload, payloads))
        elapsed = time.perf_counter() - start
        cpu_after = {pid: cpu_seconds(pid) for pid in workers}
        rss = {pid: peak_rss_mb(pid) for pid in workers}
    finally:
        server.terminate()
        server.wait(timeout=30)
    codes = sorted({code for code, _ in results})
    latencies = sorted(latency for _, latency in results)
    return {
        "uploads": len(results),
        "status_codes": codes,
        "clients": clients,
        "workers": len(workers),
        "elapsed_s": elapsed,
        "photos_per_s": len(results) / elapsed,
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "server_cpu_s_per_photo": sum(cpu_after[p] - cpu_before[p] for p in workers) / len(results),
        "peak_rss_mb_per_worker": [round(rss[p], 1) for p in workers],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
        (Path(tmp) / "static").mkdir()  # whitenoise warns on every start without it
        env = {
            **os.environ,
            "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
            "DJANGO_DEBUG": "0",
            "PLATFORM_ENV_FILE": "",
            "PLATFORM_VAR_DIR": tmp,
            "PLATFORM_UPLOAD_RATE": "100000/min",
            "PLATFORM_UPLOAD_DAILY_QUOTA": "100000",
            "PLATFORM_LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
        os.environ.update(env)
        sys.path[:0] = [str(ROOT), str(ROOT / "platform")]
        import django

        django.setup()
        t = time.perf_counter()
        photos = make_photos(args.photos)
        generate_s = time.perf_counter() - t
        bare = bare_pipeline(photos)
        http = http_run(photos, repeats=args.repeats, clients=args.clients, env=env)

    ratio = http["server_cpu_s_per_photo"] / bare["cpu_s_per_photo_mean"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": stdlib_platform.python_version()},
        "input": {"photos": args.photos, "size": [4000, 3000], "quality": 92,
                  "mean_bytes": round(bare["bytes_in_mean"]), "generate_s": round(generate_s, 2)},
        "bare_pipeline": bare,
        "http": http,
        "server_cpu_over_bare_cpu": ratio,
        "target_ratio": 1.5,
        "total_s": time.perf_counter() - began,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    rows = [
        ("input", f"{args.photos} x 4000x3000 JPEG q92, mean {bare['bytes_in_mean'] / 1e6:.2f} MB"),
        ("bare pipeline wall / photo", f"{bare['wall_s_per_photo_mean'] * 1000:.0f} ms"),
        ("bare pipeline CPU / photo", f"{bare['cpu_s_per_photo_mean'] * 1000:.0f} ms"),
        ("HTTP uploads (201)", f"{http['uploads']} ({', '.join(map(str, http['status_codes']))}), "
                               f"{http['clients']} clients, {http['workers']} sync workers"),
        ("HTTP throughput", f"{http['photos_per_s']:.2f} photos/s"),
        ("HTTP latency p50 / p99", f"{http['latency_p50_s'] * 1000:.0f} / {http['latency_p99_s'] * 1000:.0f} ms"),
        ("server CPU / photo", f"{http['server_cpu_s_per_photo'] * 1000:.0f} ms"),
        ("server CPU / bare CPU", f"{ratio:.2f}x (target <= 1.5x)"),
        ("peak RSS per worker", ", ".join(f"{mb:.0f} MB" for mb in http["peak_rss_mb_per_worker"])),
        ("total bench time", f"{result['total_s']:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
