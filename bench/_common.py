"""Helpers shared by the training benchmarks (bench/training_quality.py, bench/training_cost.py).

Photos become ``Sample``s keyed by their content sha256, as on the server; stage times come
from the timestamps of the pipeline's ``progress(stage, fraction)`` calls; the file-backed
feature cache mirrors the server's ``features/<namespace>/<sha256>.npy`` layout.
"""
from __future__ import annotations

import hashlib
import os
import platform as stdlib_platform
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `training.ml` imports without Django

from PIL import Image  # noqa: E402

from training.ml.pipeline import Sample  # noqa: E402
from training.ml.transfer import TRANSFER_STAGES as STAGES  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared" / "data"
PHOTOS_DIR = Path(os.environ.get("PLATFORM_TEST_HYMENOPTERA", SHARED / "hymenoptera"))
WEIGHTS = Path(os.environ.get("PLATFORM_TEST_WEIGHTS", SHARED / "weights" / "mobilenet_v2_imagenet_from_keras.pth"))
LABELS = ("ants", "bees")
# The set's only .gif is an "image not found" placeholder (its SOURCE.md); it is not a photo.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Photo:
    """One photo file of the ants/bees set."""

    path: Path
    label: str
    folder: str  # "train" or "val" (the set's own split)
    sha256: str


def photos_list(folders: Sequence[str] = ("train", "val")) -> list[Photo]:
    """Every photo under PHOTOS_DIR/<folder>/<label>/, sorted by path; placeholders skipped."""
    found = []
    for folder in folders:
        for path in sorted((PHOTOS_DIR / folder).glob("*/*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.parent.name in LABELS:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found.append(Photo(path=path, label=path.parent.name, folder=folder, sha256=digest))
    if not found:
        raise SystemExit(f"no photos under {PHOTOS_DIR} (set PLATFORM_TEST_HYMENOPTERA)")
    return found


def _open(path: Path) -> Image.Image:
    return Image.open(path)


def sample_for(photo: Photo, *, split: str) -> Sample:
    """A pipeline Sample keyed by content hash (the feature-cache key, as on the server)."""
    return Sample(key=photo.sha256, label=LABELS.index(photo.label), split=split, open_image=partial(_open, photo.path))


@dataclass
class StageClock:
    """A pipeline ``progress`` callback that timestamps calls; stage times come from the timestamps.

    A stage runs from its first progress call to the first call of the next stage; the last
    stage ends at its last call. Work before the first call and after the last one (input
    checks, metrics, sha256 of the file, the run record) is reported as "other". Each call
    also records this process's CPU time, which other people's jobs on the shared cores
    do not inflate the way they inflate wall time.
    """

    calls: list[tuple[float, float, str, float]] = field(default_factory=list)

    def __call__(self, stage: str, fraction: float) -> None:
        self.calls.append((time.perf_counter(), time.process_time(), stage, fraction))

    def _spans(self, column: int) -> dict[str, float]:
        starts: dict[str, float] = {}
        for call in self.calls:
            starts.setdefault(call[2], call[column])
        order = [s for s in STAGES if s in starts]
        ends = [starts[nxt] for nxt in order[1:]] + [self.calls[-1][column]]
        return {stage: end - starts[stage] for stage, end in zip(order, ends)}

    def seconds(self) -> dict[str, float]:
        """Wall seconds per stage, in STAGES order."""
        return self._spans(0)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of this process per stage (all its threads), in STAGES order."""
        return self._spans(1)


class MachineLoad:
    """CPU used on the whole machine (/proc/stat) minus this process's: how busy other jobs kept the cores."""

    def __init__(self) -> None:
        self.start = (time.perf_counter(), _machine_busy_s(), time.process_time())

    def others_cores(self) -> float | None:
        """Average cores used by other processes since construction (None without /proc/stat)."""
        wall0, busy0, own0 = self.start
        busy = _machine_busy_s()
        if busy is None or busy0 is None:
            return None
        return max(0.0, (busy - busy0) - (time.process_time() - own0)) / (time.perf_counter() - wall0)


def _machine_busy_s() -> float | None:
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10])  # guest time is already counted in user / nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def pipeline_run(*, samples, cache: MutableMapping | None, threads: int, batch_size: int, seed: int, out_dir: Path,
                 export_cache: MutableMapping | None = None):
    """The nightly job's pipeline (transfer_pipeline: the size x similarity rule decides)
    with the shared weights and default preprocessing.

    Returns (PipelineResult, StageClock, wall seconds, CPU seconds of this process).
    """
    from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
    from training.ml.transfer import transfer_pipeline

    clock = StageClock()
    start, start_cpu = time.perf_counter(), time.process_time()
    result = transfer_pipeline(
        samples=samples,
        labels=LABELS,
        backbone=BackboneConfig(weights_path=str(WEIGHTS)),
        preprocessing=Preprocessing(),
        probe=LinearProbeConfig(seed=seed),
        out_dir=out_dir,
        progress=clock,
        num_threads=threads,
        batch_size=batch_size,
        feature_cache=cache,
        export_cache=export_cache,
    )
    return result, clock, time.perf_counter() - start, time.process_time() - start_cpu


def stage_rows(*, clock: StageClock, images: dict[str, int | None], total_s: float, total_cpu_s: float) -> list[dict]:
    """One row per stage (plus "other"): wall and CPU seconds, images handled, images/s, share of the run."""
    seconds, cpu = clock.seconds(), clock.cpu_seconds()
    rows = []
    for stage, s in seconds.items():
        n = images.get(stage)
        rows.append({
            "stage": stage,
            "seconds": round(s, 3),
            "cpu_s": round(cpu[stage], 3),
            "images": n,
            "images_per_s": round(n / s, 2) if n and s > 0 else None,
            "share": round(s / total_s, 4),
        })
    other = total_s - sum(seconds.values())
    rows.append({"stage": "other", "seconds": round(other, 3), "cpu_s": round(total_cpu_s - sum(cpu.values()), 3),
                 "images": None, "images_per_s": None, "share": round(other / total_s, 4)})
    return rows


def stage_images(*, result, computed: int) -> dict[str, int | None]:
    """What each stage works through: backbone forward passes, feature rows, holdout photos."""
    return {
        "decide": None,  # similarity measure: forward passes only for photos new to the cache
        "features": computed,  # photos decoded and run through the backbone (cache misses)
        "train": result.train_count,  # feature rows the head is fitted on
        "evaluate": result.train_count + result.holdout_count,  # feature rows scored
        "export": None,  # a trace of the model, or the new head swapped into the last one: no images
        "verify": result.holdout_count,  # holdout photos decoded and run through the ONNX file
    }


def process_warm_up() -> float:
    """Import torch, onnx, onnxruntime and the dynamo exporter once, exporting a tiny model.

    A nightly worker is a long-lived process, so one-time import and exporter set-up costs
    do not belong to any night; this pays them up front and returns the seconds it took.
    """
    start = time.perf_counter()
    import onnxruntime  # noqa: F401
    import torch

    from training.ml.config import Preprocessing
    from training.ml.export import onnx_export

    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        tiny = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
        onnx_export(model=tiny, path=Path(tmp) / "warm.onnx", preprocessing=Preprocessing(input_size=8, resize=8))
    return time.perf_counter() - start


class NpyDirCache(MutableMapping):
    """Feature cache as a directory of .npy files: key "<namespace>:<sha256>" -> <root>/<namespace>/<sha256>.npy.

    Mirrors the server's storage-backed cache (features/<namespace>/<sha256>.npy); every
    read and write goes through the file system, as it would on the server.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        namespace, _, name = key.partition(":")
        if not namespace or not name or "/" in key or ".." in key:
            raise KeyError(key)
        return self.root / namespace / f"{name}.npy"

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return np.load(self._path(key), allow_pickle=False)
        except FileNotFoundError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float32)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)  # readers never see half a file

    def __delitem__(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        for path in sorted(self.root.glob("*/*.npy")):
            yield f"{path.parent.name}:{path.stem}"

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.npy"))

    def bytes_on_disk(self) -> int:
        """Total size of the cache files."""
        return sum(p.stat().st_size for p in self.root.glob("*/*.npy"))


def machine() -> dict:
    """Where the figures were measured."""
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": stdlib_platform.python_version(), "torch": torch.__version__}


def table_print(rows: list[tuple[str, ...]], header: tuple[str, ...] | None = None) -> None:
    """Print rows as columns; with a header (a table of figures) columns after the first align right."""
    rows = [header, *rows] if header else rows
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [f"{str(c):>{widths[i]}}" if header and i else f"{str(c):<{widths[i]}}" for i, c in enumerate(row)]
        print("  ".join(cells).rstrip())
        if header and n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value, spec: str = ".1f", none: str = "-") -> str:
    """Format a number, or a dash for None."""
    return none if value is None else format(value, spec)
