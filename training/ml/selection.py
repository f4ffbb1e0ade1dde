"""Measured strategy selection: train the candidates the data allows, keep the rule unless beaten.

The size x similarity table (``strategies.strategy_choose``) is the prior. Its verdict stays in
the record and wins close calls; but every night the candidates the data allows are trained
and scored by stratified k-fold cross-validation on the TRAIN split (the holdout stays for
the gate and the card), with near-duplicate groups kept within one fold:

- ``linear_probe`` and ``lower_layer_probe`` always run: both work on cached features, so
  they are nearly free. The lower-layer probe's tap (block x pooling grid) is chosen inside
  each outer fold by an inner cross-validation over the other folds (closed-form ridge).
- ``fine_tune`` (the top blocks, on activations of the frozen part cached once per photo and
  view) when every label has ``fine_tune_min_per_label`` photos;
- ``from_scratch`` only when the set is "large".

Expensive candidates run cheapest first while the budget allows (cost estimated from the
photo count and throughput measured on this machine, now); the rest are recorded as skipped.
A candidate replaces the prior only when a paired comparison over the same out-of-fold photos
(exact McNemar, Newcombe interval) puts the lower end of the 95% interval of the accuracy
difference above 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.ml import networks
from training.ml.config import LinearProbeConfig, Preprocessing
from training.ml.errors import ImageDecodeError, PipelineError
from training.ml.runtime import torch_threads
from training.ml.stats import paired_compare, proportion
from training.ml.strategies import (
    FROM_SCRATCH_DEFAULT,
    FineTuneConfig,
    LowerLayerConfig,
    SelectionConfig,
    StrategyDecision,
)

Report = Callable[[float], None]
#: The table's "small" row for a similarity column: the prior when the rule's own choice did not run.
_SMALL_ROW = {True: "linear_probe", False: "lower_layer_probe"}
#: Ridge penalty of the closed-form classifier that chooses the lower-layer probe's tap.
TAP_RIDGE = 0.1
#: The throughput measurement for the cost estimates: images per timed batch.
RATE_BATCH = 16


@dataclass
class Candidate:
    """One strategy tried by cross-validation (or skipped, with the reason)."""

    strategy: str
    params: dict
    estimated_seconds: float
    seconds: float = 0.0
    skipped: str | None = None
    predictions: np.ndarray | None = field(default=None, repr=False)  # out-of-fold label per photo

    def correct(self, y: np.ndarray) -> np.ndarray:
        """Per-photo correctness of the out-of-fold predictions."""
        return self.predictions == y

    def to_record(self, y: np.ndarray) -> dict:
        """{"strategy", "cv_accuracy": {value, n, ci95} or None, "seconds", "skipped", "params"}."""
        accuracy = None
        if self.predictions is not None:
            accuracy = proportion(int(self.correct(y).sum()), len(y)).to_dict()
        return {
            "strategy": self.strategy,
            "cv_accuracy": accuracy,
            "seconds": round(self.seconds, 3),
            "estimated_seconds": round(self.estimated_seconds, 1),
            "skipped": self.skipped,
            "params": self.params,
        }


@dataclass
class SelectionOutcome:
    """What selection decided; ``to_record()`` goes into the decision record."""

    candidates: list[Candidate]
    targets: np.ndarray
    winner: str
    prior: str
    why: str
    comparison: dict | None  # paired comparison of the best candidate against the prior
    folds: int
    groups: int
    budget_seconds: float
    seconds: float
    lower: LowerLayerConfig  # the lower-layer probe's tap chosen on all training photos
    rates: dict  # images per second measured for the cost estimates
    acts: Any = field(default=None, repr=False)  # networks.FrozenActivations, reused by the refit
    resized: Any = field(default=None, repr=False)

    def candidate(self, strategy: str) -> Candidate | None:
        """The candidate named ``strategy``, if it was considered."""
        return next((c for c in self.candidates if c.strategy == strategy), None)

    def to_record(self) -> dict:
        """JSON-ready: candidates, winner, why, the comparison and how selection ran."""
        return {
            "candidates": [c.to_record(self.targets) for c in self.candidates],
            "winner": self.winner,
            "why": self.why,
            "comparison": self.comparison,
            "selection": {
                "prior": self.prior,
                "folds": self.folds,
                "groups": self.groups,
                "photos": int(len(self.targets)),
                "budget_seconds": round(self.budget_seconds, 1),
                "seconds": round(self.seconds, 3),
                "rates_images_per_second": self.rates,
            },
        }


def cv_folds(*, targets: Sequence[int], groups: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """Fold index per photo: stratified by label, every group (near duplicates) in ONE fold.

    Uses fewer folds when the smallest label or the number of groups cannot fill ``folds``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(targets)
    group_ids = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    k = min(folds, smallest, len(np.unique(group_ids)))
    if k < 2:
        raise PipelineError("cross-validation needs at least 2 training photos (and groups) per label")
    fold_of = np.full(len(y), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for index, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, group_ids)):
        fold_of[test] = index
    return fold_of


def measure_rates(
    *, backbone: torch.nn.Module, preprocessing: Preprocessing, config: FineTuneConfig,
    runner: networks.FrozenRunner | None = None,
) -> dict:
    """Measured now: images per second of a full forward pass, of the frozen part in the runtime
    that will run it (``runner``, a ``networks.FrozenRunner``; eager torch without one) and of a
    training step of the top blocks; and the bytes one view's cached activations take (float16).
    """
    import copy

    size = preprocessing.input_size
    cut = networks.frozen_cut(backbone, config)
    backbone.eval()
    backbone.to(memory_format=torch.channels_last)
    x = torch.randn(RATE_BATCH, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        backbone(x[:2])  # warm-up
        t0 = time.perf_counter()
        stem_out = backbone.features[:cut](x)
        backbone.features[cut:](stem_out)
        forward = len(x) / max(time.perf_counter() - t0, 1e-6)
        frozen, frozen_runtime = forward, "torch (whole network)"
        if runner is not None:
            runner(x[:2].contiguous())  # warm-up
            t0 = time.perf_counter()
            runner(x.contiguous())
            frozen, frozen_runtime = len(x) / max(time.perf_counter() - t0, 1e-6), runner.runtime
    top = copy.deepcopy(backbone.features[cut:]).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(top.parameters())
    a = stem_out.clone()
    for _step in range(2):  # the first step pays for allocation
        t0 = time.perf_counter()
        loss = top(a).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train = len(a) / max(time.perf_counter() - t0, 1e-6)
    return {"forward": round(forward, 2), "frozen": round(frozen, 2), "frozen_runtime": frozen_runtime,
            "top_train": round(train, 2), "view_bytes": int(stem_out[0].numel()) * 2}


def candidates_plan(
    *, decision: StrategyDecision, config: SelectionConfig, n: int, uncached: int, folds: int, rates: dict
) -> list[Candidate]:
    """The candidates the data allows, with estimated costs (probes first, then cheapest first)."""
    forward = max(rates["forward"], 1e-3)
    top = max(rates["top_train"], 1e-3)
    fit_share = (folds - 1) / folds
    probes_seconds = uncached / forward
    plan = [
        Candidate("linear_probe", {"features": "top (1280-d, pooled)"}, probes_seconds),
        Candidate(
            "lower_layer_probe",
            {"blocks": list(config.lower_blocks), "grids": list(config.lower_grids), "chosen_by": "inner CV"},
            0.0,  # the same forward pass as the top features
        ),
    ]
    expensive = []
    smallest = min(decision.label_counts.values())
    ft = config.fine_tune
    images = n * (config.fine_tune_views + 1)
    frozen = max(rates.get("frozen", forward), 1e-3)
    # ``epochs`` per fit (at most, when the config validates and may stop early: the estimate errs high).
    ft_seconds = images / frozen + (folds * fit_share + 1) * n * ft.epochs / top
    ft_params = {"trainable_blocks": ft.trainable_blocks, "views": config.fine_tune_views,
                 "epochs": ft.epochs, "early_stopping": ft.validation_fraction > 0}
    candidate = Candidate("fine_tune", ft_params, ft_seconds)
    cache_mb = images * rates.get("view_bytes", 0) / 2**20
    if smallest < config.fine_tune_min_per_label:
        candidate.skipped = (
            f"too few photos: smallest label has {smallest} < {config.fine_tune_min_per_label} "
            "(PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL)"
        )
    elif cache_mb > config.fine_tune_cache_mb:
        candidate.skipped = (
            f"too many photos for the activation cache: {cache_mb:.0f} MB > {config.fine_tune_cache_mb} MB "
            "(PLATFORM_STRATEGY_FINE_TUNE_CACHE_MB)"
        )
    expensive.append(candidate)
    scratch = FROM_SCRATCH_DEFAULT
    # A full training step costs about three forward passes.
    scratch_seconds = (folds * fit_share + 1) * n * scratch.epochs * 3 / forward
    candidate = Candidate("from_scratch", {"max_epochs": scratch.epochs}, scratch_seconds)
    if decision.size != "large":
        candidate.skipped = f"not large: smallest label has {smallest} < {decision.thresholds.large_per_label}"
    expensive.append(candidate)
    return plan + sorted(expensive, key=lambda c: c.estimated_seconds)


def strategy_select(
    *,
    decision: StrategyDecision,
    config: SelectionConfig,
    train: Sequence[Any],
    top_x: torch.Tensor,
    lower_x: dict[tuple[int, int], torch.Tensor],
    net: torch.nn.Module,
    preprocessing: Preprocessing,
    probe: LinearProbeConfig,
    uncached: int = 0,
    report: Report | None = None,
    rates: dict | None = None,
) -> SelectionOutcome:
    """Cross-validate the candidates on ``train`` (Samples) and pick the winner (see the module doc).

    ``top_x`` [N, 1280] and ``lower_x`` ({(block, grid): [N, D]}) are the photos' cached features.
    """
    started = time.perf_counter()
    report = report or (lambda fraction: None)
    y = np.asarray([s.label for s in train], dtype=np.int64)
    num_classes = int(y.max()) + 1
    groups = [getattr(s, "group", None) or s.key for s in train]
    fold_of = cv_folds(targets=y, groups=groups, folds=config.folds, seed=config.seed)
    folds = int(fold_of.max()) + 1
    budget = config.budget_minutes * 60.0
    smallest = min(decision.label_counts.values())
    runner = None  # the fine-tune candidate's frozen part, once built
    if rates is None and (smallest >= config.fine_tune_min_per_label or decision.size == "large"):
        if smallest >= config.fine_tune_min_per_label:
            # Built once: its speed is measured for the budget, and it computes the activations.
            runner = networks.frozen_runner(
                net.features[: networks.frozen_cut(net, config.fine_tune)], preprocessing=preprocessing,
                runtime=networks.frozen_runtime_auto(len(y) * (config.fine_tune_views + 1)),
            )
        rates = measure_rates(backbone=net, preprocessing=preprocessing, config=config.fine_tune, runner=runner)
    elif rates is None:  # no expensive candidate is allowed: nothing to estimate
        rates = {"forward": 1.0, "top_train": 1.0, "measured": False}
    plan = candidates_plan(decision=decision, config=config, n=len(y), uncached=uncached, folds=folds, rates=rates)
    yt = torch.as_tensor(y)
    outcome_acts: dict[str, Any] = {}
    for position, candidate in enumerate(plan):
        report(position / len(plan))
        if candidate.skipped is not None:
            continue
        spent = time.perf_counter() - started
        expensive = candidate.strategy in ("fine_tune", "from_scratch")
        if expensive and spent + candidate.estimated_seconds > budget:
            candidate.skipped = (
                f"over budget: estimated {candidate.estimated_seconds:.0f} s, {max(budget - spent, 0):.0f} s left "
                f"of {budget:.0f} s (PLATFORM_TRAINING_BUDGET_MINUTES)"
            )
            continue
        t0 = time.perf_counter()
        if candidate.strategy == "linear_probe":
            # Probes are tiny tensors: one thread, because thread hand-offs cost more than they save
            # (a probe fit took 8 s with 2 threads on a loaded machine, 0.3 s with 1).
            with torch_threads(1):
                candidate.predictions = _probe_oof(top_x, yt, fold_of, num_classes, probe)
        elif candidate.strategy == "lower_layer_probe":
            with torch_threads(1):
                candidate.predictions, chosen = _lower_oof(lower_x, yt, fold_of, num_classes, probe)
            candidate.params["chosen_per_fold"] = chosen
        elif candidate.strategy == "fine_tune":
            candidate.predictions, epochs, acts, resized = fine_tune_oof(
                train, yt, fold_of, num_classes, net, preprocessing, config,
                report=lambda done, step=1 / len(plan), at=position / len(plan): report(at + step * done),
                runner=runner,
            )
            candidate.params["best_epochs"] = epochs
            outcome_acts.update(acts=acts, resized=resized)
        else:
            candidate.predictions = _from_scratch_oof(
                train, yt, fold_of, num_classes, net, preprocessing, outcome_acts.get("resized")
            )
        candidate.seconds = time.perf_counter() - t0
    report(1.0)
    winner, prior, why, comparison = winner_choose(
        candidates=plan, targets=y, rule_choice=decision.rule_choice, similar=decision.similar
    )
    with torch_threads(1):
        lower_tap = _tap_choose(lower_x, yt, fold_of, exclude=None)
    lower_candidate = next(c for c in plan if c.strategy == "lower_layer_probe")
    lower_candidate.params["chosen"] = {"block": lower_tap[0], "grid": lower_tap[1]}
    return SelectionOutcome(
        candidates=plan,
        targets=y,
        winner=winner,
        prior=prior,
        why=why,
        comparison=comparison,
        folds=folds,
        groups=len(set(groups)),
        budget_seconds=budget,
        seconds=time.perf_counter() - started,
        lower=LowerLayerConfig(block=lower_tap[0], grid=lower_tap[1], probe=probe),
        rates=rates,
        acts=outcome_acts.get("acts"),
        resized=outcome_acts.get("resized"),
    )


def winner_choose(
    *, candidates: Sequence[Candidate], targets: np.ndarray, rule_choice: str | None, similar: bool | None
) -> tuple[str, str, str, dict | None]:
    """(winner, prior, why, paired comparison) from the candidates' out-of-fold predictions.

    The prior is the rule's choice, or the table's small row for the same similarity when the
    rule's choice did not run. The best-scoring candidate replaces it only when the paired 95%
    interval of its accuracy minus the prior's lies above 0; ties go to the prior.
    """
    y = np.asarray(targets)
    ran = [c for c in candidates if c.predictions is not None]
    if any(c.strategy == rule_choice for c in ran):
        prior, prior_why = rule_choice, f"the rule's choice {rule_choice}"
    else:
        prior = _SMALL_ROW[bool(similar)]
        prior_why = f"{prior} (the rule's {rule_choice} did not run; the table's small row for this similarity)"
    prior_c = next(c for c in ran if c.strategy == prior)
    best = max(ran, key=lambda c: (int(c.correct(y).sum()), c is prior_c))
    if best is prior_c:
        return prior, prior, f"{prior_why} has the best cross-validated accuracy: {_score(prior_c, y)}", None
    paired = paired_compare(best.correct(y).tolist(), prior_c.correct(y).tolist())
    comparison = {"a": best.strategy, "b": prior, **paired.to_dict()}
    if paired.low > 0:
        why = (f"{best.strategy} beats {prior_why} beyond the noise: {_score(best, y)} vs {_score(prior_c, y)}; "
               f"paired difference {paired}")
        return best.strategy, prior, why, comparison
    why = (f"{best.strategy} scored {_score(best, y)} vs {_score(prior_c, y)}, not beyond the noise "
           f"(paired difference {paired}): {prior_why} ships")
    return prior, prior, why, comparison


def _score(candidate: Candidate, y: np.ndarray) -> str:
    return str(proportion(int(candidate.correct(y).sum()), len(y)))


def _probe_oof(x: torch.Tensor, y: torch.Tensor, fold_of: np.ndarray, num_classes: int, probe) -> np.ndarray:
    """Out-of-fold predictions of the linear probe on features ``x``."""
    from training.ml.linear import linear_probe_train

    pred = np.full(len(y), -1, dtype=np.int64)
    for k in range(int(fold_of.max()) + 1):
        test = torch.as_tensor(fold_of == k)
        fitted = linear_probe_train(features=x[~test], targets=y[~test], num_classes=num_classes, config=probe)
        with torch.no_grad():
            pred[test.numpy()] = fitted.head(x[test]).argmax(1).numpy()
    return pred


def _tap_choose(taps: dict, y: torch.Tensor, fold_of: np.ndarray, *, exclude: int | None) -> tuple[int, int]:
    """The (block, grid) with the best ridge accuracy over the folds other than ``exclude``."""
    from training.ml.similarity import ridge_predict

    keep = fold_of != exclude if exclude is not None else np.ones(len(y), dtype=bool)
    inner = [k for k in np.unique(fold_of[keep]).tolist()]
    best, best_correct = None, -1
    for tap, x in taps.items():
        correct = 0
        for k in inner:
            train = torch.as_tensor(keep & (fold_of != k))
            test = torch.as_tensor(fold_of == k)
            correct += int((ridge_predict(x[train], y[train], x[test], ridge=TAP_RIDGE) == y[test]).sum())
        if correct > best_correct:  # ties keep the earlier (cheaper, lower) tap
            best, best_correct = tap, correct
    return best


def _lower_oof(taps: dict, y: torch.Tensor, fold_of: np.ndarray, num_classes: int, probe) -> tuple[np.ndarray, list]:
    """Nested CV: per outer fold, the tap is chosen on the other folds only, then the probe is fitted."""
    from training.ml.linear import linear_probe_train

    pred = np.full(len(y), -1, dtype=np.int64)
    chosen = []
    for k in range(int(fold_of.max()) + 1):
        tap = _tap_choose(taps, y, fold_of, exclude=k)
        chosen.append({"block": tap[0], "grid": tap[1]})
        x = taps[tap]
        test = torch.as_tensor(fold_of == k)
        fitted = linear_probe_train(features=x[~test], targets=y[~test], num_classes=num_classes, config=probe)
        with torch.no_grad():
            pred[test.numpy()] = fitted.head(x[test]).argmax(1).numpy()
    return pred, chosen


def fine_tune_oof(train, y, fold_of, num_classes, net, preprocessing, config: SelectionConfig, report,
                  stages: dict | None = None, runner: networks.FrozenRunner | None = None):
    """Out-of-fold predictions of the fast fine-tune; the activations are computed once for all folds.

    Returns (predictions, best epoch per fold, the activations, the resized photos); the refit
    on all photos reuses the activations. ``stages`` (optional) receives each stage's wall and
    process CPU seconds: decode, activations, fold k.
    """
    stages = {} if stages is None else stages
    clock = _StageClock(stages)
    try:
        resized = networks.images_resized(images=[s.open_image for s in train], preprocessing=preprocessing)
    except ImageDecodeError as exc:
        key = train[exc.index].key if 0 <= exc.index < len(train) else "?"
        raise ImageDecodeError(f"photo {key}: {exc}", index=exc.index) from exc
    clock.lap("decode")
    acts = networks.frozen_activations(
        backbone=net, resized=resized, preprocessing=preprocessing, config=config.fine_tune,
        views=config.fine_tune_views, seed=config.seed, runner=runner,
    )
    clock.lap(f"activations ({acts.runtime})")
    pred = np.full(len(y), -1, dtype=np.int64)
    epochs = []
    for k in range(int(fold_of.max()) + 1):
        test = np.flatnonzero(fold_of == k)
        top, _, best_epoch = networks.top_blocks_train(
            backbone=net, acts=acts, targets=y, index=torch.as_tensor(np.flatnonzero(fold_of != k)),
            num_classes=num_classes, config=config.fine_tune,
        )
        pred[test] = networks.top_blocks_logits(top, acts, torch.as_tensor(test)).argmax(1).numpy()
        epochs.append(best_epoch)
        clock.lap(f"fold {k}")
        report((k + 1) / (int(fold_of.max()) + 1))  # lets the job record progress and honour a cancel
    return pred, epochs, acts, resized


class _StageClock:
    """Writes each stage's {"wall_seconds", "cpu_seconds"} into ``stages`` as it ends."""

    def __init__(self, stages: dict):
        self.stages = stages
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.stages[name] = {"wall_seconds": round(wall - self.wall, 2), "cpu_seconds": round(cpu - self.cpu, 2)}
        self.wall, self.cpu = wall, cpu


def _from_scratch_oof(train, y, fold_of, num_classes, net, preprocessing, resized):
    """Out-of-fold predictions of MobileNetV2 trained from random weights (only when large)."""
    if resized is None:
        resized = networks.images_resized(images=[s.open_image for s in train], preprocessing=preprocessing)
    pred = np.full(len(y), -1, dtype=np.int64)
    for k in range(int(fold_of.max()) + 1):
        fit = np.flatnonzero(fold_of != k)
        test = np.flatnonzero(fold_of == k)
        outcome = networks.from_scratch(
            images=[resized[i] for i in fit], targets=y[fit].tolist(), num_classes=num_classes,
            preprocessing=preprocessing, config=FROM_SCRATCH_DEFAULT,
        )
        with torch.no_grad():
            pred[test] = outcome.model(networks.images_arrays(resized, test.tolist(), preprocessing)).argmax(1).numpy()
    return pred


def taps_features_cached(
    *,
    samples: Sequence[Any],
    cache: MutableMapping[str, Any],
    top_ns: str,
    taps: Sequence[tuple[int, int]],
    net: torch.nn.Module,
    preprocessing: Preprocessing,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor], int]:
    """Top features and every tap's pooled lower-layer features from ONE forward pass per new photo.

    Cache keys: ``{top_ns}:{key}`` and ``{top_ns}:lower{block}x{grid}:{key}`` (the names the
    pipeline and the similarity pass use). Returns (top, {tap: features}, photos computed).
    """
    from training.ml.images import image_batches
    from training.ml.similarity import lower_pool

    def name(tap, s):
        return f"{top_ns}:{s.key}" if tap is None else f"{top_ns}:lower{tap[0]}x{tap[1]}:{s.key}"

    wanted = [None, *taps]
    rows: list[dict | None] = []
    for s in samples:
        hits = {tap: cache.get(name(tap, s)) for tap in wanted}
        rows.append(None if any(v is None for v in hits.values()) else hits)
    todo = [i for i, row in enumerate(rows) if row is None]
    if todo:
        net.eval()
        net.to(memory_format=torch.channels_last)
        blocks = {b for b, _ in taps}
        done = 0
        images = [samples[i].open_image for i in todo]
        with torch.inference_mode():
            try:
                for batch in image_batches(images, preprocessing=preprocessing, batch_size=batch_size):
                    x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
                    pooled = {}
                    for index, layer in enumerate(net.features):
                        x = layer(x)
                        if index in blocks:
                            for tap in taps:
                                if tap[0] == index:
                                    pooled[tap] = lower_pool(x, grid=tap[1]).float()
                    pooled[None] = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).float()
                    for j in range(len(batch)):
                        i = todo[done + j]
                        rows[i] = {tap: value[j].clone() for tap, value in pooled.items()}
                        for tap, value in rows[i].items():
                            cache[name(tap, samples[i])] = value
                    done += len(batch)
                    if progress is not None:
                        progress(done, len(todo))
            except ImageDecodeError as exc:
                index = todo[exc.index] if 0 <= exc.index < len(todo) else -1
                key = samples[index].key if index >= 0 else "?"
                raise ImageDecodeError(f"photo {key}: {exc}", index=index) from exc

    def stack(tap):
        return torch.stack([torch.as_tensor(row[tap], dtype=torch.float32).reshape(-1) for row in rows])

    return stack(None), {tap: stack(tap) for tap in taps}, len(todo)
