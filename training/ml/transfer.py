"""One entry point for every strategy: decide -> train -> evaluate -> export ONNX -> verify.

``transfer_pipeline`` has ``linear_probe_pipeline``'s calling convention and result type
(``PipelineResult``), plus the strategy decision. Without ``strategy`` or ``decision`` it
measures similarity to ImageNet on the train split (one forward pass, whose top and
lower-layer features go into the feature cache, so a probe strategy reuses them) and applies
``strategy_choose``. The ``linear_probe`` case IS ``linear_probe_pipeline``. The other
strategies run the stages below (``_decide``, ``_lower_features``, ``_strategy_train``,
``samples_probabilities``) and end like it, through ``stages.export_verify`` and
``stages.result_build``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.ml.config import DEFAULT_TOLERANCE, BackboneConfig, LinearProbeConfig, ParityTolerance, Preprocessing
from training.ml.errors import ImageDecodeError, PipelineError
from training.ml.pipeline import STAGES, Sample, features_namespace, linear_probe_pipeline
from training.ml.stages import (
    PipelineResult,
    StageClock,
    config_record,
    decode_error_for,
    export_verify,
    features_cached,
    holdout_metrics,
    result_build,
    samples_split,
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


@dataclass(frozen=True)
class _Decided:
    """The "decide" stage's output."""

    decision: StrategyDecision
    selected: Any  # selection.SelectionOutcome when the candidates were measured, else None
    lower: LowerLayerConfig  # the lower-layer tap to use (measured selection may pick another)


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

    clock = StageClock(progress)
    labels, train, holdout = samples_split(samples, labels)
    # Without a caller's cache, a local one still lets the probes reuse the similarity pass.
    cache: MutableMapping[str, Any] = feature_cache if feature_cache is not None else {}

    with torch_threads(num_threads) as threads:
        with clock.stage("decide"):
            net = backbone_load(config=backbone)
            fingerprint = weights_fingerprint(config=backbone)
            top_ns = features_namespace(backbone=backbone, preprocessing=preprocessing, fingerprint=fingerprint)
            decided = _decide(
                strategy=strategy, decision=decision, train=train, labels=labels, cache=cache, top_ns=top_ns,
                net=net, preprocessing=preprocessing, probe=probe, lower=lower, thresholds=thresholds,
                selection=selection, batch_size=batch_size, similarity_max_photos=similarity_max_photos,
                clock=clock,
            )
        chosen, lower = decided.decision, decided.lower

        if chosen.choice == "linear_probe":
            result = linear_probe_pipeline(
                samples=samples,
                labels=labels,
                backbone=backbone,
                preprocessing=preprocessing,
                probe=probe,
                out_dir=out_dir,
                progress=clock.report,
                num_threads=threads,
                batch_size=batch_size,
                tolerance=tolerance,
                feature_cache=cache,
                artifact_name=artifact_name,
                export_cache=export_cache,
            )
            result.decision = chosen.to_record()
            result.selection = decided.selected
            result.config["decision"] = result.decision
            result.seconds = {**result.seconds, "decide": round(clock.seconds["decide"], 3)}
            result.seconds["total"] = round(clock.total(), 3)
            return result

        lower_ns = _lower_namespace(top_ns, lower)
        with clock.stage("features"):  # probes' features; networks decode their photos while training
            lower_x, computed = _lower_features(
                choice=chosen.choice, train=train, cache=cache, namespace=lower_ns, net=net,
                preprocessing=preprocessing, lower=lower, batch_size=batch_size, progress=clock.reporter("features"),
            )

        with clock.stage("train"):
            outcome, strategy_config = _strategy_train(
                choice=chosen.choice,
                train=train,
                labels=labels,
                net=net,
                backbone=backbone,
                preprocessing=preprocessing,
                lower=lower,
                lower_x=lower_x,
                fine_tune=fine_tune,
                from_scratch=from_scratch,
                selected=decided.selected,
                selection=selection,
                batch_size=batch_size,
                progress=lambda epoch, epochs: clock.report("train", min(1.0, epoch / max(epochs, 1))),
            )

        holdout_y = [s.label for s in holdout]
        with clock.stage("evaluate"):
            reference = samples_probabilities(
                outcome.model, holdout, preprocessing=preprocessing, batch_size=batch_size
            )
            metrics = holdout_metrics(reference=reference, y_true=holdout_y, labels=labels)

        artifact, _, checked = export_verify(
            clock=clock,
            export=lambda: (_onnx_export(outcome.model, Path(out_dir) / artifact_name, preprocessing, labels,
                                         chosen.choice), None),
            holdout=holdout, reference=reference, y_true=holdout_y, preprocessing=preprocessing,
            tolerance=tolerance, batch_size=batch_size, threads=threads,
        )

    record = chosen.to_record()
    config = config_record(
        strategy=chosen.choice,
        labels=labels,
        backbone=backbone,
        fingerprint=fingerprint,
        namespace=lower_ns if chosen.choice == "lower_layer_probe" else None,
        preprocessing=preprocessing,
        decision=record,
        selection=dataclasses.asdict(selection) if decided.selected is not None else None,
        strategy_config=dataclasses.asdict(strategy_config),
        strategy_outcome=outcome.details,
        seeds={"strategy": _seed_of(strategy_config), "export_example_input": 0},
        tolerance=tolerance,
        threads=threads,
        batch_size=batch_size,
        features={"total": len(train), "computed": computed, "cached": len(train) - computed}
        if lower_x is not None
        else None,
    )
    return result_build(
        clock=clock, labels=labels, preprocessing=preprocessing, metrics=metrics, checked=checked,
        y_true=holdout_y, artifact=artifact, outcome=outcome, train_accuracy=outcome.train_accuracy,
        train_count=len(train), holdout_count=len(holdout), config=config, model=outcome.model,
        decision=record, selection=decided.selected,
    )


# -- decide ------------------------------------------------------------------------------------


def _decide(
    *, strategy, decision, train, labels, cache, top_ns, net, preprocessing, probe, lower, thresholds, selection,
    batch_size, similarity_max_photos, clock: StageClock,
) -> _Decided:
    """The strategy: a decision given as is, an override, a measured selection, or the rule on similarity."""
    from training.ml.similarity import similarity_from_features

    counts = {label: sum(1 for s in train if s.label == i) for i, label in enumerate(labels)}
    if decision is not None:
        if strategy is not None and strategy != decision.choice:
            raise PipelineError(f"strategy {strategy!r} contradicts the decision's {decision.choice!r}")
        return _Decided(decision, None, lower)
    if strategy is not None:
        chosen = strategy_choose(label_counts=counts, similarity=None, thresholds=thresholds, override=strategy)
        if selection is not None:
            why = f"the admin's strategy override {strategy} wins: no candidates were trained"
            chosen = dataclasses.replace(chosen, selection={"candidates": [], "winner": strategy, "why": why})
        return _Decided(chosen, None, lower)
    if selection is not None:
        return _decide_by_measurement(
            train=train, counts=counts, cache=cache, top_ns=top_ns, net=net, preprocessing=preprocessing,
            probe=probe, lower=lower, thresholds=thresholds, selection=selection, batch_size=batch_size,
            similarity_max_photos=similarity_max_photos, clock=clock,
        )
    subset = _similarity_subset(train, limit=similarity_max_photos, num_labels=len(labels))
    layers = _layer_features_cached(
        subset=subset, cache=cache, top_ns=top_ns, lower_ns=_lower_namespace(top_ns, lower), net=net,
        preprocessing=preprocessing, lower=lower, batch_size=batch_size,
        progress=clock.counter("decide", scale=0.9),
    )
    measured = similarity_from_features(
        features=layers, targets=[s.label for s in subset], threshold=thresholds.similarity_min_score
    )
    return _Decided(strategy_choose(label_counts=counts, similarity=measured, thresholds=thresholds), None, lower)


def _decide_by_measurement(
    *, train, counts, cache, top_ns, net, preprocessing, probe, lower, thresholds, selection, batch_size,
    similarity_max_photos, clock: StageClock,
) -> _Decided:
    """The rule's verdict (prior) and the measured selection, whose winner (and lower-layer tap) is used.

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
        batch_size=batch_size, progress=clock.counter("decide", scale=0.3),
    )
    position = {s.key: i for i, s in enumerate(train)}
    subset = _similarity_subset(train, limit=similarity_max_photos, num_labels=len(counts))
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
        report=lambda fraction: clock.report("decide", 0.3 + 0.7 * fraction),
    )
    decision = dataclasses.replace(
        prior, choice=outcome.winner, reason=f"{prior.reason}; measured: {outcome.why}", selection=outcome.to_record()
    )
    return _Decided(decision, outcome, outcome.lower)


def _similarity_subset(train: Sequence[Sample], *, limit: int, num_labels: int) -> list[Sample]:
    """The train photos similarity is measured on; refuses labels with fewer than 2 of them."""
    subset = _stratified_subset(train, limit=limit)
    if min(sum(1 for s in subset if s.label == i) for i in range(num_labels)) < 2:
        raise PipelineError("measuring similarity needs at least 2 training photos per label")
    return subset


def _lower_namespace(top_ns: str, lower: LowerLayerConfig) -> str:
    """Feature-cache namespace of a lower-layer tap."""
    return f"{top_ns}:lower{lower.block}x{lower.grid}"


# -- features, train, evaluate -----------------------------------------------------------------


def _lower_features(
    *, choice: str, train, cache, namespace: str, net, preprocessing, lower, batch_size: int, progress
):
    """The lower-layer probe's features of the train photos (cached ones reused) and how many were computed.

    Other strategies train on the photos themselves: (None, 0).
    """
    from training.ml.similarity import layer_features_extract

    if choice != "lower_layer_probe":
        return None, 0
    return features_cached(
        samples=train,
        cache=cache,
        namespace=namespace,
        extract=lambda todo, on_batch: layer_features_extract(
            backbone=net,
            images=[s.open_image for s in todo],
            preprocessing=preprocessing,
            block=lower.block,
            grid=lower.grid,
            batch_size=batch_size,
            progress=on_batch,
        ).lower,
        progress=progress,
    )


def _strategy_train(
    *,
    choice: str,
    train: Sequence[Sample],
    labels: tuple[str, ...],
    net,
    backbone: BackboneConfig,
    preprocessing: Preprocessing,
    lower: LowerLayerConfig,
    lower_x,
    fine_tune: FineTuneConfig,
    from_scratch: FineTuneConfig,
    selected,
    selection: SelectionConfig | None,
    batch_size: int,
    progress: Callable[[int, int], None],
):
    """Run one non-linear-probe strategy; returns (StrategyOutcome, its config).

    A fine-tuning candidate that won the measured selection refits on its cached frozen
    activations (``selected.acts``) instead of decoding the photos again.
    """
    from training.ml import networks

    train_y = [s.label for s in train]
    if choice == "fine_tune" and selected is not None and selected.acts is not None:
        outcome = networks.fine_tune_cached(
            backbone=net, acts=selected.acts, targets=train_y, num_classes=len(labels),
            config=selection.fine_tune, views=selection.fine_tune_views, progress=progress,
        )
        return outcome, selection.fine_tune
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
        raise decode_error_for(exc, train) from exc
    raise PipelineError(f"unknown strategy {choice!r}")


def samples_probabilities(model, samples: Sequence[Sample], *, preprocessing: Preprocessing, batch_size: int):
    """The torch model's probabilities [N, C] (float32 numpy) for samples, preprocessed as an app does.

    A photo that does not decode raises ``ImageDecodeError`` naming its key.
    """
    import numpy as np
    import torch

    from training.ml.images import image_batches

    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for batch in image_batches([s.open_image for s in samples], preprocessing=preprocessing,
                                       batch_size=batch_size):
                out.append(model(torch.from_numpy(batch)).float().numpy())
    except ImageDecodeError as exc:
        raise decode_error_for(exc, samples) from exc
    return np.concatenate(out).astype(np.float32)


def _onnx_export(model, path: Path, preprocessing: Preprocessing, labels: tuple[str, ...], strategy: str) -> Path:
    """ONE self-contained ONNX file of the trained model, its strategy in the metadata."""
    from training.ml import export  # looked up at call time: tests replace export.onnx_export

    return export.onnx_export(
        model=model, path=path, preprocessing=preprocessing, labels=labels, metadata={"strategy": strategy}
    )


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
            raise decode_error_for(exc, [subset[i] for i in todo]) from exc
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
