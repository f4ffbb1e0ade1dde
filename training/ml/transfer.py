"""One entry point for every strategy: decide -> train -> evaluate -> export ONNX -> verify.

``transfer_pipeline`` has ``linear_probe_pipeline``'s calling convention and result type
(``PipelineResult``), plus the strategy decision. Without ``strategy`` or ``decision`` it
measures similarity to ImageNet on the train split (one forward pass, whose top and
lower-layer features go into the feature cache, so a probe strategy reuses them) and applies
``strategy_choose``. The ``linear_probe`` case IS ``linear_probe_pipeline``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.ml.config import DEFAULT_TOLERANCE, BackboneConfig, LinearProbeConfig, ParityTolerance, Preprocessing
from training.ml.errors import ImageDecodeError, PipelineError
from training.ml.metrics import classification_metrics
from training.ml.pipeline import (
    STAGES,
    PipelineResult,
    Sample,
    _decode_error_for,
    _features_cached,
    _samples_validate,
    _versions,
    artifact_scores,
    artifact_verify,
    features_namespace,
    linear_probe_pipeline,
)
from training.ml.strategies import (
    FROM_SCRATCH_DEFAULT,
    FineTuneConfig,
    LowerLayerConfig,
    SelectionConfig,
    StrategyDecision,
    StrategyThresholds,
    strategy_choose,
)

if TYPE_CHECKING:
    from training.ml.similarity import LayerFeatures

#: Progress stages of ``transfer_pipeline``: "decide" (similarity + rule), then the pipeline's.
TRANSFER_STAGES = ("decide", *STAGES)


def transfer_pipeline(
    *,
    samples: Sequence[Sample],
    labels: Sequence[str],
    backbone: BackboneConfig,
    preprocessing: Preprocessing,
    out_dir: Path,
    strategy: str | None = None,
    decision: StrategyDecision | None = None,
    thresholds: StrategyThresholds = StrategyThresholds(),
    probe: LinearProbeConfig = LinearProbeConfig(),
    lower: LowerLayerConfig = LowerLayerConfig(),
    fine_tune: FineTuneConfig = FineTuneConfig(),
    from_scratch: FineTuneConfig = FROM_SCRATCH_DEFAULT,
    progress: Callable[[str, float], None] | None = None,
    num_threads: int | None = None,
    batch_size: int = 32,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
    feature_cache: MutableMapping[str, Any] | None = None,
    artifact_name: str = "model.onnx",
    similarity_max_photos: int = 400,
    export_cache: MutableMapping[str, bytes] | None = None,
    selection: SelectionConfig | None = None,
) -> PipelineResult:
    """Train with the chosen strategy, evaluate on the holdout, export ONE verified ONNX file.

    ``strategy`` overrides the rule (recorded as an override, similarity not measured);
    ``decision`` is a decision made earlier (e.g. shown to an admin) and is used as is.
    Similarity is measured on at most ``similarity_max_photos`` train photos (stratified).
    ``export_cache`` lets a linear probe reuse last night's export of the same backbone.
    With ``selection`` (and no override) the rule's verdict is only the prior: the candidates
    are cross-validated on the train split (``training.ml.selection``), the winner is refit on
    all training photos, and the record lists every candidate.
    Raises like ``linear_probe_pipeline``; the result's ``decision`` holds the decision record
    and ``history`` the per-epoch training history.
    """
    from training.ml.backbone import backbone_load, weights_fingerprint
    from training.ml.runtime import torch_threads
    from training.ml.similarity import layer_features_extract, similarity_from_features

    started = time.perf_counter()
    labels = tuple(labels)
    _samples_validate(samples, labels)
    train = [s for s in samples if s.split == "train"]
    holdout = [s for s in samples if s.split == "holdout"]
    report = progress or (lambda stage, fraction: None)
    # Without a caller's cache, a local one still lets the probes reuse the similarity pass.
    cache: MutableMapping[str, Any] = feature_cache if feature_cache is not None else {}
    seconds: dict[str, float] = {}
    measured_selection = None

    with torch_threads(num_threads) as threads:
        t0 = time.perf_counter()
        report("decide", 0.0)
        net = backbone_load(config=backbone)
        fingerprint = weights_fingerprint(config=backbone)
        top_ns = features_namespace(backbone=backbone, preprocessing=preprocessing, fingerprint=fingerprint)
        lower_ns = f"{top_ns}:lower{lower.block}x{lower.grid}"
        counts = {label: sum(1 for s in train if s.label == i) for i, label in enumerate(labels)}
        if decision is not None:
            if strategy is not None and strategy != decision.choice:
                raise PipelineError(f"strategy {strategy!r} contradicts the decision's {decision.choice!r}")
            chosen = decision
        elif strategy is not None:
            chosen = strategy_choose(label_counts=counts, similarity=None, thresholds=thresholds, override=strategy)
            if selection is not None:
                why = f"the admin's strategy override {strategy} wins: no candidates were trained"
                chosen = dataclasses.replace(chosen, selection={"candidates": [], "winner": strategy, "why": why})
        elif selection is not None:
            chosen, measured_selection, lower = _decide_by_measurement(
                train=train, counts=counts, cache=cache, top_ns=top_ns, net=net, preprocessing=preprocessing,
                probe=probe, lower=lower, thresholds=thresholds, selection=selection, batch_size=batch_size,
                similarity_max_photos=similarity_max_photos, report=report,
            )
            lower_ns = f"{top_ns}:lower{lower.block}x{lower.grid}"
        else:
            subset = _stratified_subset(train, limit=similarity_max_photos)
            if min(sum(1 for s in subset if s.label == i) for i in range(len(labels))) < 2:
                raise PipelineError("measuring similarity needs at least 2 training photos per label")
            layers = _layer_features_cached(
                subset=subset, cache=cache, top_ns=top_ns, lower_ns=lower_ns, net=net,
                preprocessing=preprocessing, lower=lower, batch_size=batch_size,
                progress=lambda done, total: report("decide", 0.9 * done / max(total, 1)),
            )
            measured = similarity_from_features(
                features=layers, targets=[s.label for s in subset], threshold=thresholds.similarity_min_score
            )
            chosen = strategy_choose(label_counts=counts, similarity=measured, thresholds=thresholds)
        seconds["decide"] = time.perf_counter() - t0
        report("decide", 1.0)

        if chosen.choice == "linear_probe":
            result = linear_probe_pipeline(
                samples=samples,
                labels=labels,
                backbone=backbone,
                preprocessing=preprocessing,
                probe=probe,
                out_dir=out_dir,
                progress=report,
                num_threads=threads,
                batch_size=batch_size,
                tolerance=tolerance,
                feature_cache=cache,
                artifact_name=artifact_name,
                export_cache=export_cache,
            )
            result.decision = chosen.to_record()
            result.selection = measured_selection
            result.config["decision"] = result.decision
            result.seconds = {**result.seconds, "decide": round(seconds["decide"], 3)}
            result.seconds["total"] = round(time.perf_counter() - started, 3)
            return result

        # -- features (probes) / decoding (networks happen inside train) ------------------
        t0 = time.perf_counter()
        report("features", 0.0)
        train_y = [s.label for s in train]
        lower_x, computed = None, 0
        if chosen.choice == "lower_layer_probe":
            lower_x, computed = _features_cached(
                samples=train,
                cache=cache,
                namespace=lower_ns,
                extract=lambda todo, on_batch: layer_features_extract(
                    backbone=net,
                    images=[s.open_image for s in todo],
                    preprocessing=preprocessing,
                    block=lower.block,
                    grid=lower.grid,
                    batch_size=batch_size,
                    progress=on_batch,
                ).lower,
                progress=lambda fraction: report("features", fraction),
            )
        seconds["features"] = time.perf_counter() - t0
        report("features", 1.0)

        # -- train ---------------------------------------------------------------------
        t0 = time.perf_counter()
        report("train", 0.0)
        train_progress = lambda epoch, epochs: report("train", min(1.0, epoch / max(epochs, 1)))  # noqa: E731
        if chosen.choice == "fine_tune" and measured_selection is not None and measured_selection.acts is not None:
            # The candidate that won: its frozen activations are already cached, refit on all photos.
            from training.ml.networks import fine_tune_cached

            strategy_config = selection.fine_tune
            outcome = fine_tune_cached(
                backbone=net, acts=measured_selection.acts, targets=train_y, num_classes=len(labels),
                config=strategy_config, views=selection.fine_tune_views,
                progress=train_progress,
            )
        else:
            outcome, strategy_config = _strategy_train(
                choice=chosen.choice,
                train=train,
                train_y=train_y,
                labels=labels,
                net=net,
                backbone=backbone,
                preprocessing=preprocessing,
                lower=lower,
                lower_x=lower_x,
                fine_tune=fine_tune,
                from_scratch=from_scratch,
                batch_size=batch_size,
                progress=train_progress,
            )
        seconds["train"] = time.perf_counter() - t0
        report("train", 1.0)

        # -- evaluate --------------------------------------------------------------------
        t0 = time.perf_counter()
        report("evaluate", 0.0)
        holdout_y = [s.label for s in holdout]
        try:
            reference = _probabilities(outcome.model, holdout, preprocessing=preprocessing, batch_size=batch_size)
        except ImageDecodeError as exc:
            raise _decode_error_for(exc, holdout) from exc
        metrics = classification_metrics(
            y_true=holdout_y, y_pred=reference.argmax(axis=1).tolist(), labels=labels, probabilities=reference
        )
        seconds["evaluate"] = time.perf_counter() - t0
        report("evaluate", 1.0)

        checked, artifact, export_seconds, verify_seconds = _export_verify(
            model=outcome.model,
            holdout=holdout,
            holdout_y=holdout_y,
            reference=reference,
            labels=labels,
            preprocessing=preprocessing,
            out_dir=Path(out_dir),
            artifact_name=artifact_name,
            strategy=chosen.choice,
            tolerance=tolerance,
            batch_size=batch_size,
            threads=threads,
            report=report,
        )
        seconds["export"], seconds["verify"] = export_seconds, verify_seconds

    onnx_metrics, verification = artifact_scores(
        checked=checked, y_true=holdout_y, labels=labels, artifact=Path(artifact)
    )
    sha256, size = verification["artifact_sha256"], verification["artifact_size"]
    seconds["total"] = time.perf_counter() - started
    record = chosen.to_record()
    config = {
        "strategy": chosen.choice,
        "decision": record,
        "labels": list(labels),
        "backbone": {**dataclasses.asdict(backbone), "weights_sha256_or_name": fingerprint},
        "features_namespace": lower_ns if chosen.choice == "lower_layer_probe" else None,
        "selection": dataclasses.asdict(selection) if measured_selection is not None else None,
        "preprocessing": preprocessing.to_manifest(),
        "strategy_config": dataclasses.asdict(strategy_config),
        "strategy_outcome": outcome.details,
        "seeds": {"strategy": _seed_of(strategy_config), "export_example_input": 0},
        "tolerance": dataclasses.asdict(tolerance),
        "torch_threads": threads,
        "batch_size": batch_size,
        "features": {"total": len(train), "computed": computed, "cached": len(train) - computed}
        if lower_x is not None
        else None,
        "onnx": {"input": "input", "output": "probabilities", "batch": "dynamic"},
        "versions": _versions(),
    }
    return PipelineResult(
        labels=labels,
        preprocessing=preprocessing,
        metrics=metrics,
        onnx_metrics=onnx_metrics,
        verification=verification,
        history=outcome.history,
        best_epoch=outcome.best_epoch,
        train_accuracy=outcome.train_accuracy,
        artifact_path=Path(artifact),
        artifact_sha256=sha256,
        artifact_size=size,
        train_count=len(train),
        holdout_count=len(holdout),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        config=config,
        model=outcome.model,
        decision=record,
        selection=measured_selection,
    )


def _decide_by_measurement(
    *, train, counts, cache, top_ns, net, preprocessing, probe, lower, thresholds, selection, batch_size,
    similarity_max_photos, report,
):
    """The rule's verdict (prior) and the measured selection; returns (decision, outcome, lower config).

    One forward pass per new photo gives the top features and every lower-layer tap; the
    similarity score (the rule's input) reads the default tap of a stratified subset of them.
    """
    import torch

    from training.ml.selection import strategy_select, taps_features_cached
    from training.ml.similarity import LayerFeatures, similarity_from_features

    taps = [(b, g) for b in selection.lower_blocks for g in selection.lower_grids]
    if (lower.block, lower.grid) not in taps:
        taps.append((lower.block, lower.grid))
    top_x, tap_x, computed = taps_features_cached(
        samples=train, cache=cache, top_ns=top_ns, taps=taps, net=net, preprocessing=preprocessing,
        batch_size=batch_size, progress=lambda done, total: report("decide", 0.3 * done / max(total, 1)),
    )
    position = {s.key: i for i, s in enumerate(train)}
    subset = _stratified_subset(train, limit=similarity_max_photos)
    if min(sum(1 for s in subset if s.label == i) for i in range(len(counts))) < 2:
        raise PipelineError("measuring similarity needs at least 2 training photos per label")
    rows = torch.as_tensor([position[s.key] for s in subset])
    measured = similarity_from_features(
        features=LayerFeatures(lower=tap_x[(lower.block, lower.grid)][rows], top=top_x[rows], block=lower.block,
                               grid=lower.grid),
        targets=[s.label for s in subset],
        threshold=thresholds.similarity_min_score,
    )
    prior = strategy_choose(label_counts=counts, similarity=measured, thresholds=thresholds)
    outcome = strategy_select(
        decision=prior, config=selection, train=train, top_x=top_x, lower_x=tap_x, net=net,
        preprocessing=preprocessing, probe=probe, uncached=computed,
        report=lambda fraction: report("decide", 0.3 + 0.7 * fraction),
    )
    decision = dataclasses.replace(
        prior, choice=outcome.winner, reason=f"{prior.reason}; measured: {outcome.why}", selection=outcome.to_record()
    )
    return decision, outcome, outcome.lower


def _strategy_train(
    *,
    choice: str,
    train: Sequence[Sample],
    train_y: list[int],
    labels: tuple[str, ...],
    net,
    backbone: BackboneConfig,
    preprocessing: Preprocessing,
    lower: LowerLayerConfig,
    lower_x,
    fine_tune: FineTuneConfig,
    from_scratch: FineTuneConfig,
    batch_size: int,
    progress: Callable[[int, int], None],
):
    """Run one non-linear-probe strategy; returns (StrategyOutcome, its config)."""
    from training.ml import networks

    images = [s.open_image for s in train]
    common = {"images": images, "targets": train_y, "num_classes": len(labels), "preprocessing": preprocessing}
    try:
        if choice == "lower_layer_probe":
            outcome = networks.lower_layer_probe(
                **common, backbone=net, config=lower, batch_size=batch_size, features=lower_x, progress=progress
            )
            return outcome, lower
        if choice == "fine_tune":
            return networks.fine_tune(**common, backbone=net, config=fine_tune, progress=progress), fine_tune
        if choice == "from_scratch":
            outcome = networks.from_scratch(
                **common, config=from_scratch, width_mult=backbone.width_mult, progress=progress
            )
            return outcome, from_scratch
    except ImageDecodeError as exc:
        raise _decode_error_for(exc, train) from exc
    raise PipelineError(f"unknown strategy {choice!r}")


def _probabilities(model, samples: Sequence[Sample], *, preprocessing: Preprocessing, batch_size: int):
    """The torch model's probabilities [N, C] (float32 numpy) for samples, preprocessed as an app does."""
    import numpy as np
    import torch

    from training.ml.images import image_batches

    model.eval()
    out = []
    with torch.inference_mode():
        for batch in image_batches([s.open_image for s in samples], preprocessing=preprocessing, batch_size=batch_size):
            out.append(model(torch.from_numpy(batch)).float().numpy())
    return np.concatenate(out).astype(np.float32)


def _export_verify(
    *,
    model,
    holdout: Sequence[Sample],
    holdout_y: list[int],
    reference,
    labels: tuple[str, ...],
    preprocessing: Preprocessing,
    out_dir: Path,
    artifact_name: str,
    strategy: str,
    tolerance: ParityTolerance,
    batch_size: int,
    threads: int,
    report: Callable[[str, float], None],
):
    """Export ONE self-contained ONNX file and check it with onnxruntime; delete it on failure."""
    from training.ml import export

    t0 = time.perf_counter()
    report("export", 0.0)
    artifact = export.onnx_export(
        model=model,
        path=out_dir / artifact_name,
        preprocessing=preprocessing,
        labels=labels,
        metadata={"strategy": strategy},
    )
    export_seconds = time.perf_counter() - t0
    report("export", 1.0)

    t0 = time.perf_counter()
    report("verify", 0.0)
    checked = artifact_verify(
        artifact=Path(artifact), holdout=holdout, reference=reference, y_true=holdout_y,
        preprocessing=preprocessing, tolerance=tolerance, batch_size=batch_size, threads=threads,
        progress=lambda done, total: report("verify", done / max(total, 1)),
    )
    verify_seconds = time.perf_counter() - t0
    return checked, artifact, export_seconds, verify_seconds


def _layer_features_cached(
    *, subset, cache, top_ns: str, lower_ns: str, net, preprocessing, lower, batch_size: int, progress
) -> LayerFeatures:
    """Top and lower-layer features of ``subset``; only photos missing from ``cache`` pay a forward pass.

    Night after night the similarity subset is mostly the same photos, so this keeps the
    decision's cost proportional to the new photos, like the probes' features.
    """
    import torch

    from training.ml.similarity import LayerFeatures, layer_features_extract

    def cached(s):
        top, low = cache.get(f"{top_ns}:{s.key}"), cache.get(f"{lower_ns}:{s.key}")
        if top is None or low is None:
            return None
        as_row = lambda value: torch.as_tensor(value, dtype=torch.float32).reshape(-1)  # noqa: E731
        return as_row(top), as_row(low)

    rows = [cached(s) for s in subset]
    todo = [i for i, row in enumerate(rows) if row is None]
    if todo:
        try:
            fresh = layer_features_extract(
                backbone=net,
                images=[subset[i].open_image for i in todo],
                preprocessing=preprocessing,
                block=lower.block,
                grid=lower.grid,
                batch_size=batch_size,
                progress=progress,
            )
        except ImageDecodeError as exc:
            raise _decode_error_for(exc, [subset[i] for i in todo]) from exc
        for j, i in enumerate(todo):
            rows[i] = (fresh.top[j].clone(), fresh.lower[j].clone())
            cache[f"{top_ns}:{subset[i].key}"] = rows[i][0]
            cache[f"{lower_ns}:{subset[i].key}"] = rows[i][1]
    return LayerFeatures(
        lower=torch.stack([row[1] for row in rows]), top=torch.stack([row[0] for row in rows]),
        block=lower.block, grid=lower.grid,
    )


def _stratified_subset(samples: Sequence[Sample], *, limit: int) -> list[Sample]:
    """At most ``limit`` samples, each label keeping its share (at least 2), picked evenly by key."""
    by_label: dict[int, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.key):
        by_label.setdefault(s.label, []).append(s)
    if len(samples) <= limit:
        return [s for group in by_label.values() for s in group]
    out = []
    for group in by_label.values():
        take = min(len(group), max(2, round(limit * len(group) / len(samples))))
        step = len(group) / take
        out += [group[int(i * step)] for i in range(take)]
    return out


def _seed_of(config) -> int | None:
    if hasattr(config, "seed"):
        return config.seed
    probe = getattr(config, "probe", None)
    return getattr(probe, "seed", None)
