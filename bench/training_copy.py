"""Training copies keep what the volunteer sent (issue 16): stored copy vs uploaded file.

    .venv/bin/python bench/training_copy.py [--train 500] [--test 300] [--photos 40]

1. Digits: scikit-learn's 8x8 digits upscaled to 28x28 greyscale PNGs (the shape of the
   issue's handwritten digits). The same probe (scikit-learn ``LogisticRegressionCV`` on the
   top-layer MobileNetV2 features, as the issue's baseline) is trained three times on the
   same photos: on the uploaded files, on the copies the platform stores now
   (``common.images.image_sanitize``), and on the copies it stored before (RGB JPEG q90).
   All three are scored on the same untouched test files; each stored-copy probe is compared
   with the upload probe photo by photo (``training.ml.stats.paired_compare``).
2. Photos: ants/bees photos (``../shared/data/hymenoptera``): bytes and encode time of the
   stored copy against the old q90 copy, and how far its pixels are from the decoded upload.

``copy_probe_compare`` is importable (bench/strategy_selection.py can call it on other sets).
Prints a table; writes bench/results/training_copy.json.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "platform"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:  # image_sanitize's error classes come with DRF; no database needed
    settings.configure()
    django.setup()

from PIL import Image  # noqa: E402

from bench._common import PHOTOS_DIR, RESULTS_DIR, WEIGHTS, photos_list  # noqa: E402
from common.images import image_sanitize  # noqa: E402
from training.ml.stats import paired_compare, proportion  # noqa: E402

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000}


def stored_copy(data: bytes) -> bytes:
    """The private copy the platform keeps of an upload today."""
    return image_sanitize(upload=io.BytesIO(data), size=len(data), **LIMITS).content


def legacy_copy(data: bytes) -> bytes:
    """The private copy the platform kept before issue 16: RGB JPEG quality 90 (4:2:0)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def digit_files(*, train: int, test: int, seed: int = 0) -> tuple[list[bytes], list[int], list[bytes], list[int]]:
    """Balanced, disjoint train/test 28x28 greyscale PNG digits (scikit-learn's, upscaled)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    per_train, per_test = train // 10, test // 10
    train_files, train_labels, test_files, test_labels = [], [], [], []
    for digit in range(10):
        index = rng.permutation(np.flatnonzero(digits.target == digit))[: per_train + per_test]
        for k, i in enumerate(index):
            image = Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8), mode="L")
            out = io.BytesIO()
            image.resize((28, 28), Image.Resampling.BILINEAR).save(out, format="PNG")
            files, labels = (train_files, train_labels) if k < per_train else (test_files, test_labels)
            files.append(out.getvalue())
            labels.append(digit)
    return train_files, train_labels, test_files, test_labels


def copy_probe_compare(
    *,
    train_files: Sequence[bytes],
    train_labels: Sequence[int],
    test_files: Sequence[bytes],
    test_labels: Sequence[int],
    copies: dict[str, Callable[[bytes], bytes]],
    weights: Path = WEIGHTS,
) -> dict:
    """Train the same probe on the uploads and on each kind of copy; score all on the untouched test files.

    Returns {"upload": accuracy dict, name: {"accuracy": ..., "vs_upload": paired dict}, ...}.
    """
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.ml.backbone import backbone_load, preprocessing_recommended
    from training.ml.config import BackboneConfig
    from training.ml.features import features_extract

    if not Path(weights).exists():
        raise SystemExit(f"no weights at {weights} (set PLATFORM_TEST_WEIGHTS)")
    config = BackboneConfig(weights_path=str(weights))
    backbone, preprocessing = backbone_load(config=config), preprocessing_recommended(config=config)

    def features(files: Sequence[bytes]) -> np.ndarray:
        images = [lambda data=data: Image.open(io.BytesIO(data)) for data in files]
        return features_extract(backbone=backbone, images=images, preprocessing=preprocessing).numpy()

    torch.manual_seed(0)
    test_x = features(test_files)
    results: dict = {}
    answers: dict[str, list[bool]] = {}
    for name, make in {"upload": None, **copies}.items():
        started = time.perf_counter()
        files = list(train_files) if make is None else [make(data) for data in train_files]
        encode_s = time.perf_counter() - started
        probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=5, cv=3, max_iter=3000))
        probe.fit(features(files), list(train_labels))
        answers[name] = [bool(p == t) for p, t in zip(probe.predict(test_x), test_labels)]
        results[name] = {
            "accuracy": proportion(sum(answers[name]), len(answers[name])).to_dict(),
            "train_bytes": sum(len(f) for f in files),
            "encode_s": round(encode_s, 3),
        }
        if make is not None:
            results[name]["vs_upload"] = paired_compare(answers[name], answers["upload"]).to_dict()
    return results


def photo_copies(*, count: int) -> dict:
    """Bytes, encode CPU and pixel error of the stored training copy vs the old q90 copy on real photos.

    Each photo is sanitized once (the stored copy and its format); then the private copy's encode
    alone is timed both ways from the same upright pixels, so the figures compare like with like.
    """
    from common.images import TRAINING_JPEG_QUALITY, jpeg_bytes, png_bytes

    every = photos_list(("train",))
    photos = every[:: max(1, len(every) // count)][:count]
    rows = {"stored": {"bytes": 0, "s": 0.0, "err": []}, "legacy_q90": {"bytes": 0, "s": 0.0, "err": []}}
    formats: dict[str, int] = {}
    for photo in photos:
        data = photo.path.read_bytes()
        sanitized = image_sanitize(upload=io.BytesIO(data), size=len(data), **LIMITS)
        formats[sanitized.content_extension] = formats.get(sanitized.content_extension, 0) + 1
        reference = Image.open(io.BytesIO(sanitized.content)).convert("RGB")
        if sanitized.content_extension == ".jpg":  # the upright pixels before encoding: decode the upload again
            from PIL import ImageOps

            reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
            reference.thumbnail((2000, 2000), Image.Resampling.LANCZOS)
        encoders = {
            "stored": (lambda im: png_bytes(im)) if sanitized.content_extension == ".png"
            else (lambda im: jpeg_bytes(im, quality=TRAINING_JPEG_QUALITY, subsampling=0)),
            "legacy_q90": lambda im: jpeg_bytes(im, quality=90),
        }
        for name, encode in encoders.items():
            started = time.process_time()
            copy = encode(reference)
            rows[name]["s"] += time.process_time() - started
            rows[name]["bytes"] += len(copy)
            diff = np.asarray(Image.open(io.BytesIO(copy)).convert("RGB"), dtype=np.float64) - np.asarray(
                reference, dtype=np.float64
            )
            rows[name]["err"].append(float(np.abs(diff).mean()))
    return {
        "photos": len(photos),
        "upload_bytes": sum(p.path.stat().st_size for p in photos),
        "stored_formats": formats,
        **{name: {"mean_bytes": row["bytes"] / len(photos), "ms_per_photo": 1000 * row["s"] / len(photos),
                  "mean_abs_pixel_error": float(np.mean(row["err"]))} for name, row in rows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--photos", type=int, default=40)
    args = parser.parse_args()
    torch_threads()

    started = time.perf_counter()
    train_files, train_labels, test_files, test_labels = digit_files(train=args.train, test=args.test)
    digits = copy_probe_compare(
        train_files=train_files, train_labels=train_labels, test_files=test_files, test_labels=test_labels,
        copies={"stored": stored_copy, "legacy_q90": legacy_copy},
    )
    photos = photo_copies(count=args.photos) if PHOTOS_DIR.exists() else None
    seconds = time.perf_counter() - started

    print(f"Digits, 28x28 greyscale PNG: probe trained on {len(train_files)}, scored on {len(test_files)} untouched")
    print(f"{'trained on':<12} {'accuracy (95% CI)':<26} {'vs upload (paired, 95% CI)':<34} {'exact p':>8} {'KB/photo':>9}")
    for name, row in digits.items():
        acc = row["accuracy"]
        vs = row.get("vs_upload")
        diff = f"{vs['difference']:+.3f} ({vs['ci95'][0]:+.3f} to {vs['ci95'][1]:+.3f}) {vs['a_only']}/{vs['b_only']}" if vs else "baseline"
        p = f"{vs['p_value']:.3g}" if vs else ""
        print(f"{name:<12} {acc['value']:.3f} ({acc['ci95'][0]:.3f}-{acc['ci95'][1]:.3f}) {'':<6} {diff:<34} {p:>8} "
              f"{row['train_bytes'] / len(train_files) / 1024:>9.2f}")
    if photos:
        print(f"\nPhotos (ants/bees train, {photos['photos']}): stored formats {photos['stored_formats']}")
        base = photos["legacy_q90"]
        for name in ("legacy_q90", "stored"):
            row = photos[name]
            print(f"{name:<12} {row['mean_bytes'] / 1024:8.1f} KB ({row['mean_bytes'] / base['mean_bytes']:.2f}x)"
                  f"  {row['ms_per_photo']:6.1f} ms ({row['ms_per_photo'] / base['ms_per_photo']:.2f}x)"
                  f"  mean |pixel error| {row['mean_abs_pixel_error']:.2f}")
    print(f"\n{seconds:.0f} s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "training_copy.json"
    out.write_text(json.dumps({"digits": digits, "photos": photos, "seconds": seconds,
                               "train": len(train_files), "test": len(test_files)}, indent=2))
    print(f"wrote {out}")


def torch_threads() -> None:
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


if __name__ == "__main__":
    main()
