"""Measure one model file as an app runs it: its own runtime, a fresh process, batch 1, fixed threads.

``artifact_measure`` (parent side) writes the preprocessed holdout to a ``.npy`` file and runs
``python -m training.ml.measure`` on the file's bytes. The child imports only its runtime
(onnxruntime, ExecuTorch's runtime for ``.pte``, LiteRT's interpreter for ``.tflite``), notes its resident memory, loads the
model from the bytes, runs every input one at a time, times extra runs on the first input,
and reports JSON: load time, median and p90 latency, and the peak resident memory above what
the process held before loading (the model and its working buffers). A fresh process per file
keeps one file's memory and thread pools out of the next one's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.ml.errors import VerificationError

_ROOT = Path(__file__).resolve().parents[2]  # the project root: `training` imports from here


@dataclass(frozen=True)
class Measurement:
    """What running one file showed."""

    probabilities: np.ndarray  # [N, C], one row per input, in order
    load_ms: float
    latency_ms: float  # median batch-1 latency
    latency_p90_ms: float
    peak_memory_mb: float  # peak RSS above the process's RSS before loading the model
    threads: int
    runs: int
    tensors: dict | None = None  # LiteRT: the file's input/output tensors (name, shape, dtype, quantization)

    def to_dict(self) -> dict:
        extra = {"tensors": self.tensors} if self.tensors is not None else {}
        return {**extra,
            "load_ms": round(self.load_ms, 2),
            "latency_ms": round(self.latency_ms, 3),
            "latency_p90_ms": round(self.latency_p90_ms, 3),
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "threads": self.threads,
            "timed_runs": self.runs,
        }


def artifact_measure(
    *, path: Path, format: str, inputs: np.ndarray, threads: int = 1, runs: int = 30, timeout: float = 900.0
) -> Measurement:
    """Run ``inputs`` [N, 3, S, S] through the file at ``path`` in a child process; raise VerificationError.

    The error names the runtime's own message when the file does not load or run.
    """
    if format not in _RUNNERS:
        raise VerificationError(f"no runtime on this host executes model format {format!r}")
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        inputs_path, out_path = Path(tmp) / "inputs.npy", Path(tmp) / "probabilities.npy"
        np.save(inputs_path, np.ascontiguousarray(inputs, dtype=np.float32))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "OMP_NUM_THREADS": str(threads),
        }
        command = [
            sys.executable, "-m", "training.ml.measure", "--format", format, "--model", str(path),
            "--inputs", str(inputs_path), "--out", str(out_path), "--threads", str(threads), "--runs", str(runs),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise VerificationError(f"{format} file did not finish the holdout within {timeout:.0f} s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise VerificationError(f"{format} runtime failed on the file: {' | '.join(tail) or done.returncode}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        probabilities = np.load(out_path)
    return Measurement(
        probabilities=probabilities,
        load_ms=report["load_ms"],
        latency_ms=report["latency_ms"],
        latency_p90_ms=report["latency_p90_ms"],
        peak_memory_mb=report["peak_memory_mb"],
        threads=threads,
        runs=report["runs"],
        tensors=report.get("tensors"),
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_reset() -> None:
    """Start the peak-RSS high-water mark afresh (Linux: "5" > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # then the peak also covers the imports: an overestimate, never an underestimate


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _onnx_runner(payload: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _pte_runner(payload: bytes, threads: int):
    import torch

    # The runtime's compiled core, as an app links it. (``executorch.runtime`` wraps the same
    # module but first imports the whole exporter for a warning class: 10 s per process.)
    from executorch.extension.pybindings import _C

    _C._unsafe_reset_threadpool(threads)
    module = _C._load_for_executorch_from_buffer(payload)

    def run(x):
        return module.forward((torch.from_numpy(x),))[0].numpy().copy()  # the output buffer is reused

    return run


def _tflite_runner(payload: bytes, threads: int):
    from training.ml.formats import tflite_runner

    return tflite_runner(payload, num_threads=threads)


#: format -> (runner factory, the runtime's modules, imported before the memory baseline)
_RUNNERS = {
    "onnx": (_onnx_runner, ("onnxruntime",)),
    "pte": (_pte_runner, ("torch", "executorch.extension.pybindings._C")),
    "tflite": (_tflite_runner, ("ai_edge_litert.interpreter",)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(_RUNNERS), required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)

    inputs = np.load(args.inputs)
    payload = args.model.read_bytes()
    make, modules = _RUNNERS[args.format]
    # The runtime's own libraries are not the model's memory: import them before the baseline.
    import importlib

    for module in modules:
        importlib.import_module(module)

    baseline = _rss_bytes()
    _peak_reset()
    started = time.perf_counter()
    run = make(payload, args.threads)
    load_ms = (time.perf_counter() - started) * 1e3

    outputs, timings = [], []
    for i in range(len(inputs)):
        x = np.ascontiguousarray(inputs[i : i + 1])
        t0 = time.perf_counter()
        y = run(x)
        timings.append(time.perf_counter() - t0)
        outputs.append(np.array(y, dtype=np.float32).reshape(1, -1))
    # The first call warms caches and thread pools: time it apart, then top up to ``runs``.
    timings = timings[1:]
    first = np.ascontiguousarray(inputs[:1])
    while len(timings) < args.runs:
        t0 = time.perf_counter()
        run(first)
        timings.append(time.perf_counter() - t0)
    peak = max(0, _peak_rss_bytes() - baseline)
    tensors = None
    if args.format == "tflite":
        from training.ml.formats import tflite_interpreter, tflite_tensors

        tensors = tflite_tensors(tflite_interpreter(payload))
    np.save(args.out, np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32))
    ms = np.asarray(timings) * 1e3
    print(json.dumps({
        "load_ms": load_ms,
        "latency_ms": float(np.median(ms)),
        "latency_p90_ms": float(np.percentile(ms, 90)),
        "peak_memory_mb": peak / 1e6,
        "runs": len(timings),
        **({"tensors": tensors} if tensors is not None else {}),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
