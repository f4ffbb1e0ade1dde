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
one process. Prints a table and writes bench/results/fine_tune_speed.json.
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
    """argmax of ``model`` (normalised images -> scores) on the test photos' centre crops."""
    import numpy as np
    import torch
    from PIL import Image

    from training.ml.images import image_to_array

    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(test), 32):
            batch = []
            for path, _, _ in test[start : start + 32]:
                with Image.open(path) as image:
                    batch.append(image_to_array(image, preprocessing=preprocessing))
            out.append(model(torch.from_numpy(np.stack(batch))).argmax(1))
    return torch.cat(out).tolist()


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
    parser.add_argument("--stage", choices=("all", "plain", "candidate"), default="all")
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
    raise SystemExit("candidate stage: not written yet")


if __name__ == "__main__":
    main()
