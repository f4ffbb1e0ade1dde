"""The fast fine-tuning candidate against a plain torchvision training loop on the same 500 photos.

Usage: .venv/bin/python bench/fine_tune_speed.py [--stage all|plain|candidate] [--per-label 100]
       [--test-per-label 60] [--size 224] [--threads 2] [--plain-epochs 10]

Photos: ../shared/data/neu_steel_defects (5 labels, steel textures unlike ImageNet). Per label,
in content-hash order, the first ``--per-label`` photos train and the next ``--test-per-label``
are the untouched test photos; both models are scored on the same test photos with the centre
crop an app feeds (``image_to_array``).

(a) the candidate as the nightly selection runs it (``selection.fine_tune_cv``: frozen
    activations once, 5 cross-validation fits, then the refit on all photos) and as a single
    fit (activations + ``fine_tune_cached``);
(b) the plain loop: MobileNetV2 with the same ImageNet weights and a new head, every layer
    trainable, RandomResizedCrop(224) + horizontal flip decoded from the file every epoch,
    AdamW (lr 3e-4, weight decay 1e-2), cosine schedule, ``--plain-epochs`` epochs, batch 32.

Wall seconds and process CPU seconds (``time.process_time``: the machine is shared) of each,
the ratio candidate/plain, accuracy with Wilson intervals and the paired difference (exact
McNemar, Newcombe interval). ``--stage plain`` runs (b) alone and writes
bench/results/fine_tune_speed_plain.json; ``--stage candidate`` runs (a) and compares it with
that file when it exists (same photos, checked by their hashes). ``--stage all`` runs both in
one process; ``--stage compare`` re-reads both stored stages. Prints a table and writes bench/results/fine_tune_speed.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform as stdlib_platform
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "fine_tune_speed.json"
PLAIN_RESULTS = ROOT / "bench" / "results" / "fine_tune_speed_plain.json"
CANDIDATE_RESULTS = ROOT / "bench" / "results" / "fine_tune_speed_candidate.json"
# ../shared/data from the main checkout; a worktree under wt/ sits one level deeper.
SHARED = next((p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.is_dir()),
              ROOT.parent / "shared" / "data")
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_from_keras.pth"
STEEL = SHARED / "neu_steel_defects"
PLAIN_LR = 3e-4
PLAIN_WEIGHT_DECAY = 1e-2
PLAIN_BATCH = 32


def photos_split(per_label: int, test_per_label: int):
    """(labels, train [(path, sha256, label)], test [...]): per label, in content-hash order."""
    labels = sorted(d.name for d in STEEL.iterdir() if d.is_dir())
    train, test = [], []
    for index, label in enumerate(labels):
        keyed = sorted((hashlib.sha256(p.read_bytes()).hexdigest(), p) for p in (STEEL / label).glob("*.jpg"))
        rows = [(p, key, index) for key, p in keyed]
        train += rows[:per_label]
        test += rows[per_label : per_label + test_per_label]
    return labels, train, test


class _Clock:
    """Wall and process CPU seconds since construction."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"wall_seconds": round(time.perf_counter() - self.wall, 1),
                "cpu_seconds": round(time.process_time() - self.cpu, 1)}


def _test_predictions(model, test, preprocessing):
    """argmax of ``model`` on the test photos' centre crops (as an app feeds them)."""
    from PIL import Image

    from bench.strategy_selection import model_predictions

    return model_predictions(model, [partial(Image.open, path) for path, _, _ in test], preprocessing).tolist()


def plain_run(*, train, test, labels, preprocessing, backbone, epochs: int, seed: int = 0) -> dict:
    """(b): the textbook loop, every layer trainable, augmentation decoded from the file every epoch."""
    import torch
    from PIL import Image
    from torch import nn
    from torchvision.transforms import v2

    from training.ml.backbone import backbone_load

    torch.manual_seed(seed)
    clock = _Clock()
    net = backbone_load(config=backbone)
    net.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(1280, len(labels)))
    net.requires_grad_(True)
    transform = v2.Compose([
        v2.RandomResizedCrop(preprocessing.input_size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
    ])

    def load(path):
        with Image.open(path) as image:
            return transform(image.convert("RGB"))

    optimizer = torch.optim.AdamW(net.parameters(), lr=PLAIN_LR, weight_decay=PLAIN_WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    criterion = nn.CrossEntropyLoss()
    y = torch.tensor([label for _, _, label in train])
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        epoch_clock = _Clock()
        net.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        loss_sum = 0.0
        for start in range(0, len(order), PLAIN_BATCH):
            idx = order[start : start + PLAIN_BATCH]
            x = torch.stack([load(train[i][0]) for i in idx])
            loss = criterion(net(x), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
        scheduler.step()
        history.append({"epoch": epoch, "train_loss": round(loss_sum / len(order), 4), **epoch_clock.read(),
                        "load_average": os.getloadavg()[0]})
        print(f"  plain epoch {epoch}/{epochs}: {history[-1]}", flush=True)
    fit = clock.read()
    predictions = _test_predictions(net, test, preprocessing)
    return {
        "method": (f"whole network, RandomResizedCrop({preprocessing.input_size}) + flip from the file every epoch, "
                   f"AdamW lr {PLAIN_LR} wd {PLAIN_WEIGHT_DECAY}, cosine, batch {PLAIN_BATCH}, {epochs} epochs"),
        "epochs": epochs,
        "fit": fit,
        "history": history,
        "predictions": dict(zip([key for _, key, _ in test], predictions)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", "plain", "candidate", "compare"), default="all")
    parser.add_argument("--per-label", type=int, default=100)
    parser.add_argument("--test-per-label", type=int, default=60)
    parser.add_argument("--size", type=int, default=224, help="input size (resize = size * 8/7)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain-epochs", type=int, default=10)
    args = parser.parse_args()

    import torch

    from training.ml.config import BackboneConfig, Preprocessing

    torch.set_num_threads(args.threads)
    preprocessing = Preprocessing(input_size=args.size, resize=round(args.size * 8 / 7))
    backbone = BackboneConfig(weights_path=str(WEIGHTS))
    labels, train, test = photos_split(args.per_label, args.test_per_label)
    photos = {"train": [key for _, key, _ in train], "test": [key for _, key, _ in test]}
    meta = {"args": vars(args), "labels": labels, "train": len(train), "test": len(test),
            "load_average_start": os.getloadavg(),
            "machine": {"python": stdlib_platform.python_version(), "torch": torch.__version__,
                        "cpus": os.cpu_count()}}
    if args.stage == "plain":
        plain = plain_run(train=train, test=test, labels=labels, preprocessing=preprocessing, backbone=backbone,
                          epochs=args.plain_epochs)
        PLAIN_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        PLAIN_RESULTS.write_text(json.dumps({**meta, "photos": photos, "plain": plain,
                                             "load_average_end": os.getloadavg()}, indent=2))
        print(f"wrote {PLAIN_RESULTS.relative_to(ROOT)}: {plain['fit']}")
        return
    if args.stage == "compare":  # the stored candidate stage against the stored plain stage
        stored = json.loads(CANDIDATE_RESULTS.read_text())
        if stored["photos"] != photos:
            raise SystemExit(f"{CANDIDATE_RESULTS.name} was run on other photos: rerun --stage candidate")
        candidate, meta = stored["candidate"], stored["meta"]
    else:
        candidate = candidate_run(train=train, test=test, labels=labels, preprocessing=preprocessing,
                                  backbone=backbone)
        meta["load_average_after_candidate"] = os.getloadavg()
        CANDIDATE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        CANDIDATE_RESULTS.write_text(json.dumps({"meta": meta, "photos": photos, "candidate": candidate}))
    if args.stage == "all":
        plain = plain_run(train=train, test=test, labels=labels, preprocessing=preprocessing, backbone=backbone,
                          epochs=args.plain_epochs)
        plain_source = "this run"
    elif PLAIN_RESULTS.exists():
        stored = json.loads(PLAIN_RESULTS.read_text())
        if stored["photos"] != photos or stored["args"]["size"] != args.size:
            raise SystemExit(f"{PLAIN_RESULTS.name} was run on other photos or sizes: rerun --stage plain")
        plain = stored["plain"]
        plain_source = (f"{PLAIN_RESULTS.name} (a separate process on the same photos, threads "
                        f"{stored['args']['threads']}, load average {stored['load_average_start'][0]:.1f} at its start)")
    else:
        plain, plain_source = None, None
    report = compare(candidate=candidate, plain=plain, test=test)
    report.update(meta, plain_source=plain_source, load_average_end=os.getloadavg())
    table_print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def candidate_run(*, train, test, labels, preprocessing, backbone) -> dict:
    """(a): the candidate as the nightly selection runs it (CV + refit), then as a single fit."""
    import numpy as np
    import torch
    from PIL import Image

    from training.ml import networks
    from training.ml.backbone import backbone_load
    from training.ml.pipeline import Sample
    from training.ml.selection import cv_folds, fine_tune_oof
    from training.ml.strategies import SelectionConfig

    config = SelectionConfig()  # the job's defaults
    net = backbone_load(config=backbone)
    samples = [Sample(key=key, label=label, split="train", open_image=partial(Image.open, path))
               for path, key, label in train]
    y = np.array([label for _, _, label in train])
    out = {"config": {"folds": config.folds, "views": config.fine_tune_views,
                      "trainable_blocks": config.fine_tune.trainable_blocks,
                      "epochs": config.fine_tune.epochs, "validation_fraction": config.fine_tune.validation_fraction,
                      "freeze_batchnorm": config.fine_tune.freeze_batchnorm}}

    clock = _Clock()
    fold_of = cv_folds(targets=y, groups=[s.key for s in samples], folds=config.folds, seed=config.seed)
    stages = {}
    oof, epochs, acts, _ = fine_tune_oof(samples, torch.as_tensor(y), fold_of, len(labels), net, preprocessing, config,
                                         report=lambda fraction: None, stages=stages)
    refit_clock = _Clock()
    refit = networks.fine_tune_cached(backbone=net, acts=acts, targets=y.tolist(), num_classes=len(labels),
                                      config=config.fine_tune, views=config.fine_tune_views)
    out["selection"] = {**clock.read(), "stages": {**stages, "refit": refit_clock.read()},
                        "runtime": acts.runtime, "fold_best_epochs": epochs,
                        "cv_accuracy": float((oof == y).mean()), "refit_epochs": refit.details["epochs_run"]}
    out["selection"]["predictions"] = dict(zip([key for _, key, _ in test],
                                               _test_predictions(refit.model, test, preprocessing)))

    clock = _Clock()
    resized = networks.images_resized(images=[s.open_image for s in samples], preprocessing=preprocessing)
    acts = networks.frozen_activations(backbone=net, resized=resized, preprocessing=preprocessing,
                                       config=config.fine_tune, views=config.fine_tune_views, seed=config.seed)
    activations = clock.read()
    single = networks.fine_tune_cached(backbone=net, acts=acts, targets=y.tolist(), num_classes=len(labels),
                                       config=config.fine_tune, views=config.fine_tune_views)
    out["single_fit"] = {**clock.read(), "activations": activations, "runtime": acts.runtime,
                         "epochs": single.details["epochs_run"],
                         "predictions": dict(zip([key for _, key, _ in test],
                                                 _test_predictions(single.model, test, preprocessing)))}
    return out


def compare(*, candidate: dict, plain: dict | None, test) -> dict:
    """Accuracies with Wilson intervals, time ratios and paired differences against the plain loop."""
    from training.ml.stats import paired_compare, proportion

    truth = {key: label for _, key, label in test}

    def correct(predictions):
        return [predictions[key] == label for key, label in truth.items()]

    rows = {"candidate (selection: CV + refit)": candidate["selection"], "candidate (single fit)": candidate["single_fit"]}
    if plain is not None:
        rows["plain loop"] = {**plain["fit"], "predictions": plain["predictions"], "method": plain["method"]}
    report = {"candidate_config": candidate["config"], "rows": {}}
    for name, row in rows.items():
        ok = correct(row["predictions"])
        entry = {k: v for k, v in row.items() if k != "predictions"}
        entry["test_accuracy"] = proportion(sum(ok), len(ok)).to_dict()
        if plain is not None and name != "plain loop":
            entry["wall_ratio_vs_plain"] = round(row["wall_seconds"] / plain["fit"]["wall_seconds"], 3)
            entry["cpu_ratio_vs_plain"] = round(row["cpu_seconds"] / plain["fit"]["cpu_seconds"], 3)
            entry["minus_plain"] = paired_compare(ok, correct(plain["predictions"])).to_dict()
        report["rows"][name] = entry
    return report


def table_print(report: dict) -> None:
    print(f"\nFine-tuning on {report['train']} steel photos at {report['args']['size']} px, "
          f"scored on {report['test']} untouched photos ({report['args']['threads']} thread(s), load average "
          f"{report['load_average_start'][0]:.1f} -> {report['load_average_end'][0]:.1f})")
    print(f"{'':36} {'wall s':>8} {'CPU s':>8} {'CPU ratio':>9}  {'test accuracy (95% CI)':26} minus plain (paired)")
    for name, row in report["rows"].items():
        acc = row["test_accuracy"]
        diff = row.get("minus_plain")
        diff_text = (f"{diff['difference']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}] "
                     f"p={diff['p_value']:.3g}") if diff else ""
        ratio = f"{row['cpu_ratio_vs_plain']:.3f}" if "cpu_ratio_vs_plain" in row else "1"
        print(f"{name:36} {row['wall_seconds']:8.1f} {row['cpu_seconds']:8.1f} {ratio:>9}  "
              f"{acc['value']:.3f} [{acc['ci95'][0]:.3f}-{acc['ci95'][1]:.3f}]{'':5} {diff_text}")
    if report.get("plain_source"):
        print(f"plain loop from {report['plain_source']}")


if __name__ == "__main__":
    main()
