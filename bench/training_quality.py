"""Training quality benchmark: the nightly linear-probe pipeline on ants/bees, judged on the official val photos.

Usage: .venv/bin/python bench/training_quality.py [--threads 2] [--batch-size 32] [--seed 0] [--target 0.95]

1. Contributions: the set's train/ photos (123 ants, 121 bees; the .gif placeholder is
   skipped), all with split "train". Holdout: the set's official val/ photos (70 ants,
   83 bees), split "holdout". Samples are keyed by content sha256, as on the server.
2. Runs training.ml.pipeline.linear_probe_pipeline once (MobileNetV2, the shared
   Keras-converted weights, default preprocessing) with a dict as the feature cache:
   features, train, evaluate, export (ONNX), verify (onnxruntime on the holdout photos).
   Stage times (wall, and this process's CPU) come from the timestamps of the pipeline's
   progress calls; images/s is per wall second.
3. Quality is the published model's: the exported, verified ONNX file's accuracy and
   per-label recall on the holdout (the pipeline's onnx_metrics).
4. Baselines in the same run, on the same frozen features read back from the cache (no
   second forward pass): a nearest-centroid classifier (cosine similarity to each label's
   mean train feature) and the holdout's majority-label rate.

The cores are shared: the run also reports how many cores other processes used meanwhile
(/proc/stat), since that inflates wall times. Before the run, the process imports onnx/onnxruntime and exports a tiny model, so the
export stage is not charged with one-time exporter set-up (reported separately).
Prints a table and writes bench/results/training_quality.json. Takes about a minute.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    LABELS,
    RESULTS_DIR,
    WEIGHTS,
    MachineLoad,
    fmt,
    machine,
    photos_list,
    pipeline_run,
    process_warm_up,
    sample_for,
    stage_images,
    stage_rows,
    table_print,
)

RESULTS = RESULTS_DIR / "training_quality.json"


def nearest_centroid(*, samples, cache: dict, namespace: str) -> tuple[list[int], list[int]]:
    """Cosine nearest-centroid on the cached features: (y_true, y_pred) for the holdout."""

    def rows(split: str) -> tuple[np.ndarray, np.ndarray]:
        chosen = [s for s in samples if s.split == split]
        x = np.stack([np.asarray(cache[f"{namespace}:{s.key}"], dtype=np.float64).reshape(-1) for s in chosen])
        return x / np.linalg.norm(x, axis=1, keepdims=True), np.array([s.label for s in chosen])

    train_x, train_y = rows("train")
    holdout_x, holdout_y = rows("holdout")
    centroids = np.stack([train_x[train_y == k].mean(axis=0) for k in range(len(LABELS))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return holdout_y.tolist(), (holdout_x @ centroids.T).argmax(axis=1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 shared cores)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="linear probe seed")
    parser.add_argument("--target", type=float, default=0.95, help="holdout accuracy target of the ONNX model")
    args = parser.parse_args()

    import torch

    from training.ml.metrics import classification_metrics

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    warm_up_s = process_warm_up()
    photos = photos_list(("train", "val"))
    samples = [sample_for(p, split="train" if p.folder == "train" else "holdout") for p in photos]
    cache: dict = {}

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        load = MachineLoad()
        result, clock, wall, cpu = pipeline_run(samples=samples, cache=cache, threads=args.threads,
                                                batch_size=args.batch_size, seed=args.seed, out_dir=Path(tmp))
        others_cores = load.others_cores()
    computed = result.config["features"]["computed"]
    stages = stage_rows(clock=clock, images=stage_images(result=result, computed=computed), total_s=wall, total_cpu_s=cpu)

    t = time.perf_counter()
    y_true, y_pred = nearest_centroid(samples=samples, cache=cache, namespace=result.config["features_namespace"])
    centroid = classification_metrics(y_true=y_true, y_pred=y_pred, labels=LABELS)
    centroid_s = time.perf_counter() - t
    counts = np.bincount(y_true, minlength=len(LABELS))
    majority = {"label": LABELS[int(counts.argmax())], "accuracy": float(counts.max() / counts.sum())}

    published = result.onnx_metrics
    accuracy = published.accuracy
    out = {
        "machine": machine(),
        "input": {"train_photos": result.train_count, "holdout_photos": result.holdout_count,
                  "train": "hymenoptera train/ (contributions)", "holdout": "hymenoptera val/ (official)",
                  "labels": list(LABELS)},
        "published_model": {
            "metrics": published.to_dict(),
            "torch_metrics_accuracy": result.metrics.accuracy,
            "verification": {k: result.verification[k] for k in ("ok", "top1_agreement", "max_abs_diff", "count")
                             if k in result.verification},
            "artifact_size": result.artifact_size,
            "artifact_sha256": result.artifact_sha256,
            "best_epoch": result.best_epoch,
            "train_accuracy": result.train_accuracy,
        },
        "decision": result.decision,
        "target_accuracy": args.target,
        "passed": accuracy >= args.target,
        "baselines": {
            "nearest_centroid": {**centroid.to_dict(), "seconds": round(centroid_s, 4),
                                 "features": "cached by the pipeline run, cosine to label means"},
            "majority_label": majority,
        },
        "ratios": {
            "accuracy_over_nearest_centroid": accuracy / centroid.accuracy,
            "error_over_nearest_centroid": (1 - accuracy) / (1 - centroid.accuracy) if centroid.accuracy < 1 else None,
            "accuracy_over_majority": accuracy / majority["accuracy"],
        },
        "stages": stages,
        "pipeline_seconds": result.seconds,
        "features": result.config["features"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "other_processes_cores": None if others_cores is None else round(others_cores, 2),
        "process_warm_up_s": round(warm_up_s, 3),
        "total_bench_s": round(time.perf_counter() - began, 3),
        "config": {"threads": args.threads, "batch_size": args.batch_size, "seed": args.seed,
                   "weights": WEIGHTS.name, "preprocessing": "default (Preprocessing())"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")

    recall = ", ".join(f"{k} {v['recall']:.1%}" for k, v in published.per_label.items())
    c_recall = ", ".join(f"{k} {v['recall']:.1%}" for k, v in centroid.per_label.items())
    verdict = "PASS" if out["passed"] else "FAIL"
    table_print([
        ("photos", f"{result.train_count} train (train/), {result.holdout_count} holdout (official val/)"),
        ("strategy (size x similarity rule)", (result.decision or {}).get("reason", "-")),
        ("published ONNX model, holdout accuracy", f"{accuracy:.1%} (target >= {args.target:.0%}: {verdict})"),
        ("  per-label recall", recall),
        ("  torch model accuracy / ONNX top-1 agreement",
         f"{result.metrics.accuracy:.1%} / {result.verification.get('top1_agreement', float('nan')):.1%}"),
        ("baseline: nearest centroid, same features", f"{centroid.accuracy:.1%} ({c_recall})"),
        ("baseline: majority label", f"{majority['accuracy']:.1%} ({majority['label']})"),
        ("accuracy / nearest centroid", f"{out['ratios']['accuracy_over_nearest_centroid']:.3f}x"),
        ("errors / nearest centroid", fmt(out["ratios"]["error_over_nearest_centroid"], ".2f") + "x"),
        ("accuracy / majority label", f"{out['ratios']['accuracy_over_majority']:.2f}x"),
        ("pipeline wall time", f"{wall:.1f} s (CPU {cpu:.1f} s; warm-up before it {warm_up_s:.1f} s, not counted)"),
        ("other jobs on the cores meanwhile", f"{fmt(others_cores, '.2f')} of {machine()['cpus']} cores"),
    ])
    print()
    table_print([(r["stage"], fmt(r["seconds"], ".2f"), fmt(r["cpu_s"], ".2f"), fmt(r["images"], "d"),
                  fmt(r["images_per_s"], ",.1f"), f"{r['share']:.0%}") for r in stages],
                header=("stage", "wall s", "CPU s", "images", "images/s", "share"))
    print(f"wrote {RESULTS.relative_to(RESULTS_DIR.parents[1])}")


if __name__ == "__main__":
    main()
