"""Strategy benchmark on data unlike ImageNet: scikit-learn's 8x8 digits, upscaled to RGB.

Usage: .venv/bin/python bench/strategy_digits.py [--photos 400] [--size 64] [--threads 2] [--only-rule]

1. Takes `--photos` digits (stratified, seed 0), upscales each 8x8 grey image to
   `--size` px RGB (bilinear), splits them 75% train / 25% holdout (stratified).
2. Runs `transfer_pipeline` without a strategy: it measures similarity to ImageNet on the
   train split and applies the size x similarity rule (digits: small, dissimilar ->
   lower-layer probe), trains, evaluates on the holdout, exports and verifies ONNX.
3. Runs the other strategies on the same split as overrides (linear_probe always;
   fine_tune and from_scratch unless --only-rule), each through the same entry point.

Prints a table and writes bench/results/strategy_digits.json. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform as stdlib_platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "strategy_digits.json"
WEIGHTS = ROOT.parent / "shared" / "data" / "weights" / "mobilenet_v2_imagenet_from_keras.pth"


def digits_samples(*, photos: int, size: int, holdout_fraction: float = 0.25, seed: int = 0):
    """Samples (train/holdout stratified) and label names for upscaled scikit-learn digits."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from training.ml.pipeline import Sample

    digits = load_digits()
    rng = np.random.default_rng(seed)
    per_label = photos // 10
    samples = []
    for label in range(10):
        index = rng.permutation(np.flatnonzero(digits.target == label))[:per_label]
        cut = round(len(index) * holdout_fraction)
        for n, i in enumerate(index):
            grey = Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8), mode="L")
            image = grey.resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
            samples.append(
                Sample(
                    key=f"digit{label}/{int(i)}",
                    label=label,
                    split="holdout" if n < cut else "train",
                    open_image=image.copy,  # a fresh copy per call: the pipeline closes what it opens
                )
            )
    return samples, tuple(str(d) for d in range(10))


def run(*, samples, labels, strategy, size, threads, out_dir):
    from training.ml.config import BackboneConfig, Preprocessing
    from training.ml.transfer import transfer_pipeline

    started = time.perf_counter()
    result = transfer_pipeline(
        samples=samples,
        labels=labels,
        backbone=BackboneConfig(weights_path=str(WEIGHTS)),
        preprocessing=Preprocessing(input_size=size, resize=size),
        out_dir=out_dir,
        strategy=strategy,
        num_threads=threads,
    )
    return result, time.perf_counter() - started


def main() -> None:
    from training.ml.strategies import STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only-rule", action="store_true", help="rule's choice and linear_probe only")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        sys.exit(f"weights not found: {WEIGHTS}")

    samples, labels = digits_samples(photos=args.photos, size=args.size)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        result, seconds = run(
            samples=samples,
            labels=labels,
            strategy=None,
            size=args.size,
            threads=args.threads,
            out_dir=Path(tmp) / "rule",
        )
        decision = result.decision
        rule = decision["choice"]
        rows[rule] = _row(result, seconds, chosen_by="rule")
        others = ["linear_probe"] if args.only_rule else ["linear_probe", *STRATEGIES]
        for strategy in others:
            if strategy in rows:
                continue
            result, seconds = run(
                samples=samples,
                labels=labels,
                strategy=strategy,
                size=args.size,
                threads=args.threads,
                out_dir=Path(tmp) / strategy,
            )
            rows[strategy] = _row(result, seconds, chosen_by="override")

    print(f"\ndigits {args.photos} photos at {args.size} px, {args.threads} threads")
    print(f"decision: {decision['reason']}\n")
    header = (
        f"{'strategy':<18} {'by':<9} {'accuracy':>8} {'onnx acc':>8} {'macro F1':>8} {'ECE':>6} "
        f"{'epochs':>6} {'train s':>8} {'total s':>8} {'MB':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(
            f"{name:<18} {row['chosen_by']:<9} {row['accuracy']:>8.3f} {row['onnx_accuracy']:>8.3f} "
            f"{row['macro_f1']:>8.3f} {row['ece']:>6.3f} {row['epochs_run']:>6} {row['seconds']['train']:>8.1f} "
            f"{row['wall_seconds']:>8.1f} {row['artifact_mb']:>6.2f}"
        )
    beats = rows[rule]["accuracy"] > rows["linear_probe"]["accuracy"]
    print(f"\nrule's choice ({rule}) beats linear_probe: {beats}")

    import torch

    train_count = sum(1 for s in samples if s.split == "train")
    payload = {
        "benchmark": "strategy_digits",
        "data": {
            "source": "sklearn.datasets.load_digits (8x8 grey, upscaled bilinear to RGB)",
            "photos": len(samples),
            "train": train_count,
            "holdout": len(samples) - train_count,
            "size_px": args.size,
        },
        "decision": decision,
        "rule_choice": rule,
        "rule_beats_linear_probe": beats,
        "strategies": rows,
        "machine": {
            "python": stdlib_platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _row(result, wall_seconds: float, *, chosen_by: str) -> dict:
    return {
        "chosen_by": chosen_by,
        "accuracy": result.metrics.accuracy,
        "onnx_accuracy": result.onnx_metrics.accuracy,
        "macro_f1": round(result.metrics.macro_f1, 4),
        "ece": round(result.metrics.ece, 4),
        "train_accuracy": round(result.train_accuracy, 4),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "parity_max_abs_diff": result.verification["max_abs_diff"],
        "artifact_mb": round(result.artifact_size / 1e6, 3),
        "seconds": result.seconds,
        "wall_seconds": round(wall_seconds, 2),
    }


if __name__ == "__main__":
    main()
