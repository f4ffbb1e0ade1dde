"""Measured strategy selection: folds keep near duplicates together, the prior wins close calls,
a clear win replaces it, the budget skips what it cannot afford, the fast fine-tune exports what it trained."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.ml.conftest import photo_files
from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
from training.ml.pipeline import Sample
from training.ml.selection import (
    Candidate,
    candidates_plan,
    cv_folds,
    measure_rates,
    strategy_select,
    winner_choose,
)
from training.ml.strategies import FineTuneConfig, SelectionConfig, StrategyDecision, strategy_choose

RATES = {"forward": 50.0, "top_train": 100.0}  # images per second; given, so no network runs
PROBE = LinearProbeConfig(epochs=60, patience=10)


def _decision(*, counts: dict[str, int], similar: bool, override: str | None = None) -> StrategyDecision:
    score = 0.2 if similar else -0.2
    similarity = {"score": score, "top_accuracy": 0.5, "lower_accuracy": 0.5}
    return strategy_choose(label_counts=counts, similarity=similarity, override=override)


def _samples(y: np.ndarray, groups: list[str] | None = None) -> list[Sample]:
    return [
        Sample(key=f"p{i}", label=int(label), split="train", open_image=None, group=None if groups is None else groups[i])
        for i, label in enumerate(y)
    ]


def _blobs(y: np.ndarray, *, separation: float, dim: int, seed: int) -> torch.Tensor:
    """Features where each label's mean is ``separation`` apart along its own axis, plus unit noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(y), dim))
    x[np.arange(len(y)), y] += separation
    return torch.as_tensor(x, dtype=torch.float32)


def test_near_duplicate_groups_never_straddle_folds_and_labels_are_stratified():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    # Groups of 1-4 near duplicates within a label, as the snapshot's group roots make them.
    groups, current = [], 0
    for _label in range(3):
        left = 40
        while left:
            size = min(left, int(rng.integers(1, 5)))
            groups += [f"g{current}"] * size
            current, left = current + 1, left - size
    fold_of = cv_folds(targets=y, groups=groups, folds=5, seed=0)
    assert set(fold_of.tolist()) == set(range(5))
    for group in set(groups):
        assert len({fold_of[i] for i, g in enumerate(groups) if g == group}) == 1
    for k in range(5):  # every fold holds every label, roughly in proportion
        counts = np.bincount(y[fold_of == k], minlength=3)
        assert counts.min() >= 4 and counts.max() <= 12


def test_fewer_folds_when_the_smallest_label_cannot_fill_them():
    y = np.array([0] * 10 + [1] * 3)
    fold_of = cv_folds(targets=y, groups=[str(i) for i in range(13)], folds=5)
    assert fold_of.max() + 1 == 3


def _candidate(strategy: str, correct: int, n: int, y: np.ndarray) -> Candidate:
    predictions = y.copy()
    predictions[correct:] = 1 - y[correct:]  # the last n - correct photos wrong
    return Candidate(strategy, {}, 0.0, predictions=predictions)


def test_the_prior_ships_unless_the_paired_interval_clears_zero():
    y = np.zeros(60, dtype=np.int64)
    close = [_candidate("linear_probe", 50, 60, y), _candidate("fine_tune", 53, 60, y)]
    winner, prior, why, comparison = winner_choose(candidates=close, targets=y, rule_choice="linear_probe", similar=True)
    assert (winner, prior) == ("linear_probe", "linear_probe")
    assert comparison["a"] == "fine_tune" and comparison["ci95"][0] <= 0 < comparison["ci95"][1]
    assert "not beyond the noise" in why

    tie = [_candidate("linear_probe", 50, 60, y), _candidate("lower_layer_probe", 50, 60, y)]
    assert winner_choose(candidates=tie, targets=y, rule_choice="lower_layer_probe", similar=False)[0] == (
        "lower_layer_probe"
    )

    clear = [_candidate("linear_probe", 30, 60, y), _candidate("fine_tune", 58, 60, y)]
    winner, _, why, comparison = winner_choose(candidates=clear, targets=y, rule_choice="linear_probe", similar=True)
    assert winner == "fine_tune" and comparison["ci95"][0] > 0 and "beyond the noise" in why


def test_when_the_rules_choice_did_not_run_the_small_row_is_the_prior():
    y = np.zeros(40, dtype=np.int64)
    ran = [_candidate("linear_probe", 30, 40, y), _candidate("lower_layer_probe", 31, 40, y),
           Candidate("from_scratch", {}, 1e5, skipped="over budget")]
    winner, prior, why, _ = winner_choose(candidates=ran, targets=y, rule_choice="from_scratch", similar=False)
    assert prior == winner == "lower_layer_probe" and "did not run" in why


def test_selection_switches_to_the_lower_layer_probe_on_a_clear_win_and_records_every_candidate():
    y = np.repeat(np.arange(3), 30)
    top = _blobs(y, separation=0.0, dim=16, seed=1)  # the top features know nothing
    taps = {(3, 1): _blobs(y, separation=0.0, dim=8, seed=2), (6, 2): _blobs(y, separation=4.0, dim=12, seed=3)}
    decision = _decision(counts={"a": 30, "b": 30, "c": 30}, similar=True)
    assert decision.rule_choice == "linear_probe"
    config = SelectionConfig(fine_tune_min_per_label=31, lower_blocks=(3, 6), lower_grids=(1, 2))
    outcome = strategy_select(decision=decision, config=config, train=_samples(y), top_x=top, lower_x=taps, net=None,
                              preprocessing=Preprocessing(), probe=PROBE, rates=RATES)
    assert outcome.winner == "lower_layer_probe" and outcome.prior == "linear_probe"
    assert outcome.comparison["ci95"][0] > 0
    assert (outcome.lower.block, outcome.lower.grid) == (6, 2)  # the informative tap, found by CV
    record = outcome.to_record()
    by_name = {c["strategy"]: c for c in record["candidates"]}
    assert by_name["lower_layer_probe"]["cv_accuracy"]["value"] > 0.8
    assert by_name["lower_layer_probe"]["cv_accuracy"]["n"] == 90
    assert by_name["linear_probe"]["cv_accuracy"]["ci95"][1] < 0.6
    assert "smallest label has 30 < 31" in by_name["fine_tune"]["skipped"]
    assert by_name["from_scratch"]["skipped"].startswith("not large")


def test_selection_keeps_the_rules_choice_when_both_probes_see_the_same():
    y = np.repeat(np.arange(2), 25)
    x = _blobs(y, separation=1.0, dim=8, seed=4)
    decision = _decision(counts={"a": 25, "b": 25}, similar=False)
    outcome = strategy_select(
        decision=decision, config=SelectionConfig(lower_blocks=(6,), lower_grids=(2,)), train=_samples(y),
        top_x=x, lower_x={(6, 2): x.clone()}, net=None, preprocessing=Preprocessing(), probe=PROBE, rates=RATES,
    )
    assert outcome.winner == "lower_layer_probe" and outcome.comparison is None


def test_the_budget_skips_the_expensive_candidate_and_says_so():
    y = np.repeat(np.arange(2), 20)
    x = _blobs(y, separation=3.0, dim=8, seed=5)
    decision = _decision(counts={"a": 20, "b": 20}, similar=True)
    config = SelectionConfig(fine_tune_min_per_label=10, budget_minutes=0.01, lower_blocks=(6,), lower_grids=(2,))
    outcome = strategy_select(decision=decision, config=config, train=_samples(y), top_x=x, lower_x={(6, 2): x},
                              net=None, preprocessing=Preprocessing(), probe=PROBE, rates=RATES)
    fine_tune = outcome.candidate("fine_tune")
    assert fine_tune.predictions is None and fine_tune.skipped.startswith("over budget")
    assert "PLATFORM_TRAINING_BUDGET_MINUTES" in fine_tune.skipped
    assert fine_tune.estimated_seconds > 0.6  # 40 photos x 5 views / 50 per s + the training
    assert outcome.winner == "linear_probe"  # the probes always run


def test_the_fine_tune_estimate_uses_the_measured_speed_of_the_frozen_part():
    # The frozen pass runs in onnxruntime (here 4x the eager whole-network rate): the estimate
    # that decides the budget must use that rate, not the eager forward pass.
    decision = _decision(counts={"a": 100, "b": 100}, similar=False)
    config = SelectionConfig(fine_tune_min_per_label=10)
    ft = config.fine_tune
    n, folds = 200, 5
    training = (folds * (folds - 1) / folds + 1) * n * ft.epochs / 100.0

    def estimate(rates):
        plan = candidates_plan(decision=decision, config=config, n=n, uncached=0, folds=folds, rates=rates)
        return next(c for c in plan if c.strategy == "fine_tune").estimated_seconds

    eager = estimate({"forward": 50.0, "top_train": 100.0})
    measured = estimate({"forward": 50.0, "frozen": 200.0, "top_train": 100.0})
    assert eager == pytest.approx(n * 5 / 50.0 + training)
    assert measured == pytest.approx(n * 5 / 200.0 + training)


def test_the_fine_tune_candidate_is_skipped_when_its_activation_cache_would_not_fit():
    decision = _decision(counts={"a": 100, "b": 100}, similar=False)
    rates = {"forward": 50.0, "top_train": 100.0, "view_bytes": 2**20}  # 1 MB per cached view
    fits = SelectionConfig(fine_tune_min_per_label=10, fine_tune_cache_mb=1000)  # 200 x 5 views = 1000 MB
    plan = candidates_plan(decision=decision, config=fits, n=200, uncached=0, folds=5, rates=rates)
    assert next(c for c in plan if c.strategy == "fine_tune").skipped is None
    tight = SelectionConfig(fine_tune_min_per_label=10, fine_tune_cache_mb=999)
    plan = candidates_plan(decision=decision, config=tight, n=200, uncached=0, folds=5, rates=rates)
    skipped = next(c for c in plan if c.strategy == "fine_tune").skipped
    assert skipped is not None and "1000 MB > 999 MB" in skipped and "PLATFORM_STRATEGY_FINE_TUNE_CACHE_MB" in skipped


def test_the_rates_time_the_frozen_part_in_its_own_runtime_and_size_one_view(tiny_backbone):
    from training.ml import networks

    pre = Preprocessing(input_size=64, resize=72)
    config = FineTuneConfig(trainable_blocks=12)
    cut = networks.frozen_cut(tiny_backbone, config)
    runner = networks.frozen_runner(tiny_backbone.features[:cut], preprocessing=pre, runtime="torch")
    rates = measure_rates(backbone=tiny_backbone, preprocessing=pre, config=config, runner=runner)
    assert rates["frozen_runtime"] == "torch" and rates["frozen"] > 0 and rates["top_train"] > 0
    with torch.inference_mode():  # float16 bytes of features[:7]'s output for one 64 px view
        assert rates["view_bytes"] == tiny_backbone.features[:cut](torch.zeros(1, 3, 64, 64)).numel() * 2
    without = measure_rates(backbone=tiny_backbone, preprocessing=pre, config=config)
    assert without["frozen_runtime"] == "torch (whole network)"


def test_a_runner_built_for_another_cut_is_refused(tiny_backbone):
    from training.ml import networks

    pre = Preprocessing(input_size=32, resize=36)
    resized = networks.images_resized(images=[Image.new("RGB", (36, 36))], preprocessing=pre)
    runner = networks.frozen_runner(tiny_backbone.features[:5], preprocessing=pre, runtime="torch")
    with pytest.raises(ValueError, match=r"features\[:5\].*features\[:7\]"):
        networks.frozen_activations(backbone=tiny_backbone, resized=resized, preprocessing=pre,
                                    config=FineTuneConfig(trainable_blocks=12), views=1, runner=runner)


def test_the_candidate_trains_on_every_photo_for_its_whole_schedule(tiny_backbone):
    # No validation slice: a few dozen photos make the validation loss noise, and stopping on it
    # kept half-trained weights. Every photo trains, the cosine schedule runs out, the last weights ship.
    from training.ml import networks

    config = SelectionConfig().fine_tune
    pre = Preprocessing(input_size=32, resize=36)
    rng = np.random.default_rng(1)
    resized = networks.images_resized(
        images=[Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)) for _ in range(8)], preprocessing=pre
    )
    acts = networks.frozen_activations(backbone=tiny_backbone, resized=resized, preprocessing=pre, config=config,
                                       views=1, runtime="torch")
    outcome = networks.fine_tune_cached(backbone=tiny_backbone, acts=acts, targets=[i % 2 for i in range(8)],
                                        num_classes=2, config=config, views=1)
    assert outcome.details["epochs_run"] == config.epochs == outcome.best_epoch
    assert all(record["val_loss"] is None for record in outcome.history)
    assert outcome.history[-1]["lr"] < outcome.history[0]["lr"]  # annealed
    assert acts.cut == 7  # the 14x14 and 7x7 stages train


def test_fast_fine_tune_exports_exactly_what_it_trained(tiny_backbone):
    from training.ml import networks

    pre = Preprocessing(input_size=32, resize=36)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)) for _ in range(12)]
    config = FineTuneConfig(epochs=2, patience=2, trainable_blocks=2, batch_size=4)
    resized = networks.images_resized(images=images, preprocessing=pre)
    acts = networks.frozen_activations(backbone=tiny_backbone, resized=resized, preprocessing=pre, config=config,
                                       views=2, seed=0)
    assert acts.views.shape[:2] == (12, 3) and acts.cut == len(tiny_backbone.features) - 2
    again = networks.frozen_activations(backbone=tiny_backbone, resized=resized, preprocessing=pre, config=config,
                                        views=2, seed=0)
    assert torch.equal(acts.views, again.views)  # the augmented views are fixed for a seed
    assert not torch.equal(acts.views[:, 0], acts.views[:, 1])
    outcome = networks.fine_tune_cached(backbone=tiny_backbone, acts=acts, targets=[i % 2 for i in range(12)],
                                        num_classes=2, config=config, views=2)
    x = networks.images_arrays(resized, list(range(12)), pre)
    with torch.no_grad():
        shipped = outcome.model(x)
    assert shipped.shape == (12, 2)
    assert outcome.details["frozen_blocks"] == acts.cut and 1 <= outcome.details["epochs_run"] <= 2
    # The whole network on the images gives what the trained top gave on the cached centre views.
    top_blocks = outcome.model.net.features[acts.cut :]
    assert all(not p.requires_grad for p in top_blocks.parameters())
    with torch.no_grad():
        from_cache = outcome.model.net.classifier(
            torch.nn.functional.adaptive_avg_pool2d(top_blocks(acts.views[:, 0].float()), 1).flatten(1)
        ).softmax(1)
    assert torch.allclose(shipped, from_cache, atol=2e-3)


@pytest.mark.slow
def test_selection_on_real_ants_and_bees(hymenoptera_dir, ml_weights_path, tmp_path):
    from training.ml.transfer import transfer_pipeline

    samples = []
    for label, name in enumerate(("ants", "bees")):
        files = [path for path, lab in photo_files(hymenoptera_dir / "train") if lab == name][:36]
        for i, path in enumerate(files):
            samples.append(Sample(key=f"{name}/{path.name}", label=label, split="train" if i < 30 else "holdout",
                                  open_image=partial(Image.open, path)))
    selection = SelectionConfig(
        fine_tune_min_per_label=30, fine_tune_views=1, lower_blocks=(6, 13), lower_grids=(1, 2),
        fine_tune=FineTuneConfig(epochs=3, patience=2, trainable_blocks=2, backbone_lr_mult=0.3),
    )
    result = transfer_pipeline(
        samples=samples, labels=("ants", "bees"), backbone=BackboneConfig(weights_path=str(ml_weights_path)),
        preprocessing=Preprocessing(input_size=96, resize=96), out_dir=Path(tmp_path), selection=selection,
    )
    decision = result.decision
    by_name = {c["strategy"]: c for c in decision["candidates"]}
    assert decision["rule_choice"] == "linear_probe" and decision["similar"] is True
    assert by_name["fine_tune"]["skipped"] is None and by_name["fine_tune"]["cv_accuracy"]["n"] == 60
    assert by_name["linear_probe"]["cv_accuracy"]["value"] > 0.7  # ImageNet features know ants from bees
    assert decision["choice"] == decision["winner"] == result.config["strategy"]
    assert decision["why"] in decision["reason"]
    # The prior ships unless the winner's paired interval over the same 60 photos clears zero.
    assert decision["winner"] == "linear_probe" or decision["comparison"]["ci95"][0] > 0
    # The refit winner is what was exported and verified (the holdout never entered selection).
    assert result.holdout_count == 12 and result.onnx_metrics.confusion == result.metrics.confusion


@pytest.mark.slow
def test_an_override_wins_over_measured_selection_and_the_record_says_so(ml_weights_path, tmp_path):
    from tests.ml.digits import digit_images
    from training.ml.transfer import transfer_pipeline

    images, targets = digit_images(count=60, size=64)
    samples = [Sample(key=f"d{i}", label=t, split="holdout" if i % 3 == 0 else "train", open_image=image.copy)
               for i, (image, t) in enumerate(zip(images, targets, strict=True))]
    result = transfer_pipeline(
        samples=samples, labels=tuple(str(d) for d in range(10)),
        backbone=BackboneConfig(weights_path=str(ml_weights_path)), preprocessing=Preprocessing(input_size=64, resize=64),
        out_dir=Path(tmp_path), strategy="linear_probe", selection=SelectionConfig(),
    )
    decision = result.decision
    assert decision["choice"] == decision["winner"] == decision["override"] == "linear_probe"
    assert decision["candidates"] == [] and "override" in decision["why"] and result.selection is None


def test_frozen_part_in_onnxruntime_gives_the_torch_activations():
    """The cheaper runtime for the frozen pass changes nothing the top blocks train on."""
    import torchvision

    from training.ml import networks

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None, inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2]])
    net.classifier = torch.nn.Identity()
    net.eval().requires_grad_(False)
    pre = Preprocessing(input_size=32, resize=36)
    rng = np.random.default_rng(0)
    resized = networks.images_resized(
        images=[Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)) for _ in range(5)],
        preprocessing=pre,
    )
    config = FineTuneConfig(trainable_blocks=2)
    runs = {
        runtime: networks.frozen_activations(backbone=net, resized=resized, preprocessing=pre, config=config,
                                             views=2, seed=0, runtime=runtime)
        for runtime in ("torch", "onnxruntime")
    }
    assert runs["onnxruntime"].runtime == "onnxruntime" and runs["torch"].runtime == "torch"
    a, b = runs["torch"].views.float(), runs["onnxruntime"].views.float()
    assert a.shape == b.shape == (5, 3, *a.shape[2:])
    assert torch.allclose(a, b, atol=1e-2, rtol=1e-2)  # float16 storage; the runtimes agree to ~1e-5
    # Few images: the export would cost more than it saves, so "auto" stays in torch.
    auto = networks.frozen_activations(backbone=net, resized=resized, preprocessing=pre, config=config, views=2)
    assert auto.runtime == "torch"


def test_frozen_part_falls_back_to_torch_when_the_export_fails(monkeypatch):
    from training.ml import networks

    def broken(*args, **kwargs):
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(networks, "onnx_export", broken)
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    runner = networks.frozen_runner(stem, preprocessing=Preprocessing(input_size=8, resize=8), runtime="onnxruntime")
    assert runner.runtime == "torch"
    assert runner(torch.zeros(2, 3, 8, 8)).shape == (2, 4, 6, 6)
