"""Measured strategy selection on three real sets, against a plain baseline in the same run.

Usage: .venv/bin/python bench/strategy_selection.py [--max-per-label 45] [--size 224] [--threads 2]
       [--budget 60] [--compare-per-label 100] [--compare-epochs 8] [--sets hymenoptera,digits,steel]
       [--formats onnx,pte,tflite | none] [--variants fp32,fp16,int8,...]

For each set (../shared/data/hymenoptera: small, ImageNet-like; scikit-learn's digits: small
greyscale, dissimilar; ../shared/data/neu_steel_defects: steel textures, 5 labels):
1. at most ``--max-per-label`` photos per label, 30% of each label held out (by content hash
   order, fixed), the rest is the train split;
2. ``transfer_pipeline`` with measured selection (the nightly job's path): the rule's choice,
   every candidate's cross-validated score (train split only), the published model's holdout
   accuracy with its Wilson interval;
3. every candidate that ran, refit on all training photos and scored on the same holdout;
4. the baseline: scikit-learn ``LogisticRegressionCV`` on the top-layer (1280-d) features of
   the same training photos (same backbone), on the same holdout, with a paired comparison
   (exact McNemar, Newcombe interval) against the published model.
5. the nightly compression stage on the published model (the job's formats and variants
   unless narrowed): each format's recommended file against the fp32 file of the same version
   on the holdout (paired interval), within the policy's 1 point and agreement bound or not,
   and the stage's seconds; the three targets are checked at the end.
Then the fast fine-tune (top blocks on cached activations) against the plain torchvision loop
(whole network, augmentation every epoch) on the same ants/bees photos: time ratio and a paired
comparison on the val folder.

Prints a table and writes bench/results/strategy_selection.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform as stdlib_platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "strategy_selection.json"
# ../shared/data from the main checkout; a worktree under wt/ sits one level deeper.
SHARED = next((p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.is_dir()),
              ROOT.parent / "shared" / "data")
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_from_keras.pth"
SUFFIXES = {".jpg", ".jpeg", ".png"}


def _folder_photos(folder: Path) -> dict[str, list[Path]]:
    """label -> image files of ``folder/<label>/``, sorted by name."""
    return {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in SUFFIXES)
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def _samples(items: dict[str, list[tuple[bytes, object]]], *, holdout_fraction: float = 0.3):
    """Samples keyed by content sha256; per label, the first 30% in hash order are the holdout."""
    from training.ml.pipeline import Sample

    labels = tuple(sorted(items))
    samples = []
    for index, label in enumerate(labels):
        keyed = sorted((hashlib.sha256(raw).hexdigest(), opener) for raw, opener in items[label])
        cut = round(len(keyed) * holdout_fraction)
        for n, (key, opener) in enumerate(keyed):
            samples.append(Sample(key=key, label=index, split="holdout" if n < cut else "train", open_image=opener))
    return samples, labels


def folder_set(folder: Path, max_per_label: int):
    """A photo folder as (samples, labels)."""
    from PIL import Image

    items = {
        label: [(path.read_bytes(), partial(Image.open, path)) for path in files[:max_per_label]]
        for label, files in _folder_photos(folder).items()
    }
    return _samples(items)


def digits_set(max_per_label: int):
    """scikit-learn's 8x8 digits as 28x28 greyscale PNGs (the size an app would upload), as RGB photos."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    items: dict[str, list] = {}
    for label in range(10):
        for i in np.flatnonzero(digits.target == label)[:max_per_label]:
            grey = Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8), mode="L")
            buffer = io.BytesIO()
            grey.resize((28, 28), Image.Resampling.BILINEAR).save(buffer, format="PNG")
            raw = buffer.getvalue()
            items.setdefault(str(label), []).append((raw, partial(lambda b: Image.open(io.BytesIO(b)), raw)))
    return _samples(items)


def model_predictions(model, openers, preprocessing):
    """argmax of ``model`` (normalised images -> scores) on each photo, preprocessed as an app does."""
    import numpy as np
    import torch

    from training.ml.images import image_batches

    model.eval()
    out = []
    with torch.inference_mode():
        for batch in image_batches(openers, preprocessing=preprocessing, batch_size=32):
            out.append(model(torch.from_numpy(batch)).argmax(1).numpy())
    return np.concatenate(out)


def _holdout_predictions(model, holdout, preprocessing):
    return model_predictions(model, [s.open_image for s in holdout], preprocessing)


def run_set(name, samples, labels, *, preprocessing, backbone, selection, probe, threads, compress=None):
    """The pipeline with selection, each candidate on the holdout, and the baseline."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.ml.backbone import backbone_load, weights_fingerprint
    from training.ml.linear import linear_probe_train
    from training.ml.networks import fine_tune_cached
    from training.ml.pipeline import features_namespace
    from training.ml.selection import taps_features_cached
    from training.ml.stats import paired_compare, proportion
    from training.ml.transfer import transfer_pipeline

    train = [s for s in samples if s.split == "train"]
    holdout = [s for s in samples if s.split == "holdout"]
    y_train = np.array([s.label for s in train])
    y_hold = np.array([s.label for s in holdout])
    cache: dict = {}
    started = time.perf_counter()
    compression = None
    with tempfile.TemporaryDirectory() as tmp:
        result = transfer_pipeline(
            samples=samples, labels=labels, backbone=backbone, preprocessing=preprocessing, out_dir=Path(tmp),
            probe=probe, feature_cache=cache, selection=selection, num_threads=threads,
        )
        training_seconds = time.perf_counter() - started
        if compress is not None:
            compression = shipped_files_report(result=result, train=train, holdout=holdout, config=compress,
                                               out_dir=Path(tmp) / "compressed", threads=threads)
    night_seconds = time.perf_counter() - started
    outcome = result.selection
    decision = result.decision
    published_pred = _holdout_predictions(result.model, holdout, preprocessing)
    published_correct = published_pred == y_hold

    # -- every candidate refit on all training photos, scored on the holdout ------------------
    net = backbone_load(config=backbone)
    top_ns = features_namespace(backbone=backbone, preprocessing=preprocessing,
                                fingerprint=weights_fingerprint(config=backbone))
    tap = (outcome.lower.block, outcome.lower.grid)
    t0 = time.perf_counter()
    train_top, train_taps, _ = taps_features_cached(samples=train, cache=cache, top_ns=top_ns, taps=[tap], net=net,
                                                    preprocessing=preprocessing)
    hold_top, hold_taps, _ = taps_features_cached(samples=holdout, cache=cache, top_ns=top_ns, taps=[tap], net=net,
                                                  preprocessing=preprocessing)
    holdout_feature_seconds = time.perf_counter() - t0
    yt = torch.as_tensor(y_train)

    def probe_pred(x_train, x_hold):
        fitted = linear_probe_train(features=x_train, targets=yt, num_classes=len(labels), config=probe)
        with torch.no_grad():
            return fitted.head(x_hold).argmax(1).numpy()

    candidates = []
    for c in decision["candidates"]:
        row = {**c, "holdout_accuracy": None}
        pred = None
        if c["skipped"] is None:
            if c["strategy"] == decision["choice"]:
                pred = published_pred
            elif c["strategy"] == "linear_probe":
                pred = probe_pred(train_top, hold_top)
            elif c["strategy"] == "lower_layer_probe":
                pred = probe_pred(train_taps[tap], hold_taps[tap])
            elif c["strategy"] == "fine_tune" and outcome.acts is not None:
                refit = fine_tune_cached(backbone=net, acts=outcome.acts, targets=y_train.tolist(),
                                         num_classes=len(labels), config=selection.fine_tune,
                                         views=selection.fine_tune_views)
                pred = _holdout_predictions(refit.model, holdout, preprocessing)
        if pred is not None:
            row["holdout_accuracy"] = proportion(int((pred == y_hold).sum()), len(y_hold)).to_dict()
        candidates.append((row, pred))

    # -- baseline: LogisticRegressionCV on the same top-layer features ------------------------
    t0 = time.perf_counter()
    baseline = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=3000, n_jobs=1))
    baseline.fit(train_top.numpy(), y_train)
    baseline_correct = baseline.predict(hold_top.numpy()) == y_hold
    baseline_seconds = time.perf_counter() - t0
    paired = paired_compare(published_correct.tolist(), baseline_correct.tolist())
    for row, pred in candidates:
        if pred is not None:
            row["minus_baseline"] = paired_compare((pred == y_hold).tolist(), baseline_correct.tolist()).to_dict()
    candidates = [row for row, _ in candidates]
    # Target 2: where some candidate beats the baseline beyond the noise, so must the published model.
    can_beat = any(row.get("minus_baseline", {}).get("ci95", [0, 0])[0] > 0 for row in candidates)
    return {
        "set": name,
        "labels": list(labels),
        "train": len(train),
        "holdout": len(holdout),
        "rule_choice": decision["rule_choice"],
        "similarity_score": decision["similarity"]["score"],
        "size": decision["size"],
        "measured_choice": decision["choice"],
        "why": decision["why"],
        "candidates": candidates,
        "published": {
            "strategy": decision["choice"],
            "holdout_accuracy": proportion(int(published_correct.sum()), len(y_hold)).to_dict(),
        },
        "baseline": {
            "method": "StandardScaler + LogisticRegressionCV on top-layer (1280-d) features",
            "holdout_accuracy": proportion(int(baseline_correct.sum()), len(y_hold)).to_dict(),
            "seconds": round(baseline_seconds, 2),
        },
        "published_minus_baseline": paired.to_dict(),
        "published_below_baseline_beyond_noise": paired.high < 0,
        "a_candidate_beats_baseline_beyond_noise": can_beat,
        "published_beats_baseline_beyond_noise": paired.low > 0,
        "night_seconds": round(night_seconds, 1),
        "training_seconds": round(training_seconds, 1),
        "compression": compression,
        "pipeline_seconds": result.seconds,
        "holdout_feature_seconds": round(holdout_feature_seconds, 1),
    }


def shipped_files_report(*, result, train, holdout, config, out_dir, threads) -> dict:
    """The nightly compression stage on the trained model, and each format's recommended file against fp32.

    Per format: the recommended file (the smallest the policy offers) and the fp32 file of the
    same version, both run by their runtime on the holdout; the paired accuracy difference
    (exact McNemar, Newcombe interval), whether it is within the policy's accuracy loss (as
    observed, established by the holdout's paired interval, or by the agreement bound: accuracies
    differ by at most the disagreement rate) and the card's agreement bound against the policy.
    """
    import numpy as np

    from training.ml.compress import compression_pipeline, samples_arrays
    from training.ml.config import Preprocessing
    from training.ml.measure import artifact_measure
    from training.ml.stats import paired_compare

    t0 = time.perf_counter()
    outcome = compression_pipeline(
        model=result.model, float_onnx=result.artifact_path, labels=list(result.labels),
        preprocessing=result.preprocessing, train=train, holdout=holdout, out_dir=out_dir, config=config,
        num_threads=threads,
    )
    seconds = time.perf_counter() - t0
    card = outcome.card
    policy = card["policy"]
    y = np.array([s.label for s in holdout])
    inputs: dict = {}

    def correct(artifact):
        pre = Preprocessing.from_manifest(artifact.preprocessing)
        if pre not in inputs:
            inputs[pre] = samples_arrays(holdout, pre)
        measured = artifact_measure(path=artifact.path, format=artifact.format, inputs=inputs[pre], threads=1, runs=1)
        return measured.probabilities.argmax(1) == y

    files = []
    for fmt, variant in sorted(card["recommended"].items()):
        shipped = next(a for a in outcome.artifacts if a.format == fmt and a.variant == variant)
        fp32 = next((a for a in outcome.artifacts if a.format == fmt and a.variant == "fp32"), None)
        row = shipped.measurements
        entry = {"format": fmt, "variant": variant, "size": shipped.size,
                 "fp32_size": fp32.size if fp32 else None, "fidelity": row.get("fidelity")}
        if fp32 is not None:
            paired = paired_compare(correct(shipped).tolist(), correct(fp32).tolist())
            entry["minus_fp32"] = paired.to_dict()
            entry["within_accuracy_loss"] = paired.difference >= -policy["max_accuracy_loss"] - 1e-9
            entry["within_accuracy_loss_established"] = paired.low >= -policy["max_accuracy_loss"] - 1e-9
        fidelity = row.get("fidelity")
        entry["within_agreement_bound"] = (variant == "fp32" or (
            fidelity is not None and fidelity["upper95"] <= policy["max_disagreement"]))
        # Two models' accuracies differ by at most the share of photos where their answers
        # differ: an upper 95% bound of that share (holdout + augmented views, no labels needed)
        # within the allowed loss establishes "within 1 point" on photos like the witnesses.
        entry["within_accuracy_loss_established_by_agreement"] = variant == "fp32" or (
            fidelity is not None and fidelity["upper95"] <= policy["max_accuracy_loss"])
        files.append(entry)
    return {
        "policy": policy,
        "recommended": card["recommended"],
        "withheld": [{"format": r["format"], "variant": r["variant"], "reason": r.get("reason")}
                     for r in card["variants"] if r.get("status") == "rejected"],
        "files": files,
        "seconds": round(seconds, 1),
        "stage_seconds": card.get("seconds"),
    }


def compare_fine_tunes(*, per_label, epochs, preprocessing, backbone, selection, threads):
    """Fast fine-tune vs the plain torchvision loop on the same ants/bees photos (val folder = holdout)."""
    import dataclasses

    import numpy as np
    import torch
    from PIL import Image

    from training.ml import networks
    from training.ml.backbone import backbone_load
    from training.ml.runtime import torch_threads
    from training.ml.stats import paired_compare, proportion
    from training.ml.strategies import FineTuneConfig

    root = SHARED / "hymenoptera"
    train_files = [(p, i) for i, (lab, files) in enumerate(_folder_photos(root / "train").items()) for p in files[:per_label]]
    hold_files = [(p, i) for i, (lab, files) in enumerate(_folder_photos(root / "val").items()) for p in files]
    targets = [i for _, i in train_files]
    y_hold = np.array([i for _, i in hold_files])
    out = {"train": len(train_files), "holdout": len(hold_files), "max_epochs": epochs}
    with torch_threads(threads):
        net = backbone_load(config=backbone)
        resized = networks.images_resized(images=[partial(Image.open, p) for p, _ in train_files],
                                          preprocessing=preprocessing)
        hold = networks.images_resized(images=[partial(Image.open, p) for p, _ in hold_files],
                                       preprocessing=preprocessing)
        x_hold = networks.images_arrays(hold, list(range(len(hold))), preprocessing)
        fast_config = dataclasses.replace(selection.fine_tune, epochs=epochs)
        t0 = time.perf_counter()
        acts = networks.frozen_activations(backbone=net, resized=resized, preprocessing=preprocessing,
                                           config=fast_config, views=selection.fine_tune_views)
        fast = networks.fine_tune_cached(backbone=net, acts=acts, targets=targets, num_classes=2, config=fast_config,
                                         views=selection.fine_tune_views)
        fast_seconds = time.perf_counter() - t0
        plain_config = FineTuneConfig(epochs=epochs, patience=fast_config.patience)
        t0 = time.perf_counter()
        plain = networks.fine_tune(images=resized, targets=targets, num_classes=2, backbone=net,
                                   preprocessing=preprocessing, config=plain_config)
        plain_seconds = time.perf_counter() - t0
        with torch.no_grad():
            fast_correct = fast.model(x_hold).argmax(1).numpy() == y_hold
            plain_correct = plain.model(x_hold).argmax(1).numpy() == y_hold
    out["fast"] = {"seconds": round(fast_seconds, 1), "epochs_run": fast.details["epochs_run"],
                   "method": "top blocks on cached activations (centre + fixed augmented views)",
                   "trainable_blocks": fast_config.trainable_blocks, "views": selection.fine_tune_views,
                   "holdout_accuracy": proportion(int(fast_correct.sum()), len(y_hold)).to_dict()}
    out["plain"] = {"seconds": round(plain_seconds, 1), "epochs_run": plain.details["epochs_run"],
                    "method": "whole network, torchvision augmentation every epoch",
                    "holdout_accuracy": proportion(int(plain_correct.sum()), len(y_hold)).to_dict()}
    out["time_ratio_fast_over_plain"] = round(fast_seconds / plain_seconds, 3)
    out["fast_minus_plain"] = paired_compare(fast_correct.tolist(), plain_correct.tolist()).to_dict()
    return out


def compressed_print(sets) -> None:
    """Each set's recommended file per format against fp32 of the same version, on the holdout."""
    rows = [(s, f) for s in sets if s.get("compression") for f in s["compression"]["files"]]
    if not rows:
        return
    print(f"\n{'set':12} {'recommended file':18} {'size':>9} {'x fp32':>7}  {'minus fp32 (paired, holdout)':38} "
          f"{'disagree (upper95)':22} within 1 pt (established: interval, agreement) / bound")
    for s, f in rows:
        d, fid = f.get("minus_fp32"), f.get("fidelity") or {}
        diff = f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] n={d['n']}" if d else "-"
        agree = f"{fid['disagreements']}/{fid['n']} ({fid['upper95']:.3f})" if fid else "-"
        ratio = f"{f['size'] / f['fp32_size']:.2f}" if f.get("fp32_size") else "-"
        print(f"{s['set']:12} {f['variant'] + ' ' + f['format']:18} {f['size']:9d} {ratio:>7}  {diff:38} {agree:22} "
              f"{f.get('within_accuracy_loss')} ({f.get('within_accuracy_loss_established')}, "
              f"{f.get('within_accuracy_loss_established_by_agreement')}) / {f['within_agreement_bound']}")
    for s in sets:
        c = s.get("compression")
        if c:
            print(f"{s['set']:12} compression stage {c['seconds']:.0f} s; withheld: "
                  + ("; ".join(f"{w['variant']} {w['format']}" for w in c["withheld"]) or "none"))


def targets_check(sets) -> dict:
    """The issue's three targets, each "met", "NOT met (...)" or "not measured"."""
    below = [s["set"] for s in sets if s["published_below_baseline_beyond_noise"]]
    missed = [s["set"] for s in sets
              if s["a_candidate_beats_baseline_beyond_noise"] and not s["published_beats_baseline_beyond_noise"]]
    beat = [s["set"] for s in sets if s["a_candidate_beats_baseline_beyond_noise"]]
    files = [(s["set"], f) for s in sets if s.get("compression") for f in s["compression"]["files"]]
    outside = [f"{name} {f['variant']} {f['format']}" for name, f in files
               if not (f.get("within_accuracy_loss") and f["within_agreement_bound"])]
    return {
        "published never below the baseline beyond its interval": "met" if not below else f"NOT met ({below})",
        "published beats the baseline where a candidate can": (
            ("met" if not missed else f"NOT met ({missed})") + f" (a candidate beats it beyond the noise on: "
            f"{', '.join(beat) or 'no set'})"),
        "recommended files within 1 point of fp32 and within the agreement bound": (
            "not measured" if not files else ("met" if not outside else f"NOT met ({outside})")),
    }


def _acc(record) -> str:
    if not record:
        return "-"
    return f"{record['value']:.3f} [{record['ci95'][0]:.2f}-{record['ci95'][1]:.2f}] n={record['n']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-label", type=int, default=45)
    parser.add_argument("--size", type=int, default=224, help="input size (resize = size * 8/7)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=60.0, help="PLATFORM_TRAINING_BUDGET_MINUTES")
    parser.add_argument("--compare-per-label", type=int, default=100)
    parser.add_argument("--compare-epochs", type=int, default=8)
    parser.add_argument("--sets", default="hymenoptera,digits,steel")
    parser.add_argument("--fine-tune-min-per-label", type=int, default=30,
                        help="PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL (the job's default)")
    parser.add_argument("--formats", default="onnx,pte,tflite",
                        help="compression formats (PLATFORM_COMPRESSION_FORMATS; 'none': no compression stage)")
    parser.add_argument("--variants", default="",
                        help="compression variants (PLATFORM_COMPRESSION_VARIANTS; default: the job's)")
    args = parser.parse_args()

    import warnings

    import torch

    from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
    from training.ml.strategies import SelectionConfig

    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")  # LogisticRegressionCV's notice

    torch.set_num_threads(args.threads)
    preprocessing = Preprocessing(input_size=args.size, resize=round(args.size * 8 / 7))
    backbone = BackboneConfig(weights_path=str(WEIGHTS))
    # The job's defaults otherwise.
    selection = SelectionConfig(budget_minutes=args.budget, fine_tune_min_per_label=args.fine_tune_min_per_label)
    probe = LinearProbeConfig()
    compress = None
    if args.formats != "none":
        from training.ml.config import COMPRESSION_VARIANTS, CompressionConfig

        variants = tuple(args.variants.split(",")) if args.variants else COMPRESSION_VARIANTS
        compress = CompressionConfig(variants=variants, formats=tuple(args.formats.split(",")))
    loaders = {
        "hymenoptera": lambda: folder_set(SHARED / "hymenoptera" / "train", args.max_per_label),
        "digits": lambda: digits_set(args.max_per_label),
        "steel": lambda: folder_set(SHARED / "neu_steel_defects", args.max_per_label),
    }
    started = time.perf_counter()
    sets = []
    for name in args.sets.split(","):
        samples, labels = loaders[name]()
        sets.append(run_set(name, samples, labels, preprocessing=preprocessing, backbone=backbone,
                            selection=selection, probe=probe, threads=args.threads, compress=compress))
        print(f"[{name}] done after {time.perf_counter() - started:.0f} s", flush=True)
        # Sets finished so far, in case a long run is stopped before the end.
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.with_suffix(".partial.json").write_text(json.dumps({"args": vars(args), "sets": sets}, indent=2))
    comparison = None
    if args.compare_per_label > 0:
        comparison = compare_fine_tunes(per_label=args.compare_per_label, epochs=args.compare_epochs,
                                        preprocessing=preprocessing, backbone=backbone, selection=selection,
                                        threads=args.threads)

    print(f"\nMeasured strategy selection ({args.size} px, <= {args.max_per_label} photos per label, "
          f"budget {args.budget:g} min, {args.threads} threads)")
    print(f"{'set':12} {'candidate':18} {'CV accuracy (train split)':34} {'holdout accuracy':30} {'seconds':>8}  note")
    for s in sets:
        for c in s["candidates"]:
            note = f"skipped: {c['skipped'][:60]}" if c["skipped"] else ("SHIPPED" if c["strategy"] == s["measured_choice"] else "")
            if c["strategy"] == s["rule_choice"]:
                note = (note + " (rule's choice)").strip()
            print(f"{s['set']:12} {c['strategy']:18} {_acc(c['cv_accuracy']):34} {_acc(c['holdout_accuracy']):30} "
                  f"{c['seconds']:8.1f}  {note}")
        d = s["published_minus_baseline"]
        print(f"{s['set']:12} {'baseline LogRegCV':18} {'':34} {_acc(s['baseline']['holdout_accuracy']):30} "
              f"{s['baseline']['seconds']:8.1f}  published - baseline {d['difference']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] p={d['p_value']:.3g}")
        print(f"{s['set']:12} whole night {s['night_seconds']:.0f} s; rule {s['rule_choice']} "
              f"(similarity {s['similarity_score']:+.3f}, {s['size']}), measured {s['measured_choice']}")
    compressed_print(sets)
    targets = targets_check(sets)
    print("\nTargets:")
    for name, verdict in targets.items():
        print(f"  {name}: {verdict}")
    if comparison:
        f, p, d = comparison["fast"], comparison["plain"], comparison["fast_minus_plain"]
        print(f"\nFine-tuning on {comparison['train']} ants/bees photos, holdout {comparison['holdout']} (val folder):")
        print(f"  fast  {f['seconds']:7.1f} s  {f['epochs_run']} epochs  {_acc(f['holdout_accuracy'])}")
        print(f"  plain {p['seconds']:7.1f} s  {p['epochs_run']} epochs  {_acc(p['holdout_accuracy'])}")
        print(f"  time ratio fast/plain {comparison['time_ratio_fast_over_plain']:.3f}; fast - plain "
              f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] p={d['p_value']:.3g}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "args": vars(args),
        "machine": {"python": stdlib_platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
        "selection": {"folds": selection.folds, "fine_tune_min_per_label": selection.fine_tune_min_per_label,
                      "fine_tune_views": selection.fine_tune_views,
                      "trainable_blocks": selection.fine_tune.trainable_blocks},
        "sets": sets,
        "fine_tune_comparison": comparison,
        "targets": targets,
        "load_average_end": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))
    print(f"\nwrote {RESULTS.relative_to(ROOT)} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
