"""Holdout split from content hashes, and pipeline input checks (no torch work needed)."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
from training.ml.errors import PipelineError
from training.ml.pipeline import Sample, linear_probe_pipeline, split_for
from training.ml.stages import features_cached

HASHES = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]


def test_split_is_deterministic_and_about_twenty_percent():
    first = [split_for(h) for h in HASHES]
    assert first == [split_for(h) for h in HASHES]
    share = first.count("holdout") / len(first)
    assert 0.19 <= share <= 0.21
    assert set(first) == {"train", "holdout"}


def test_split_is_stable_and_monotone_in_the_percentage():
    for h in HASHES[:2000]:
        assert split_for(h.upper()) == split_for(h)
        if split_for(h, holdout_percent=10) == "holdout":
            assert split_for(h, holdout_percent=20) == "holdout"  # raising it only adds to holdout
    assert {split_for(h, holdout_percent=0) for h in HASHES[:500]} == {"train"}
    assert {split_for(h, holdout_percent=100) for h in HASHES[:500]} == {"holdout"}
    # The documented formula, so other code (SQL, apps) can reproduce it.
    h = HASHES[0]
    assert split_for(h, holdout_percent=37) == ("holdout" if int(h[:16], 16) % 100 < 37 else "train")


@pytest.mark.parametrize("bad", ["", "xyz", "12345", "g" * 64])
def test_split_refuses_non_hashes(bad):
    with pytest.raises(ValueError):
        split_for(bad)


def _sample(key, label, split):
    return Sample(key=key, label=label, split=split, open_image=lambda: Image.new("RGB", (8, 8)))


@pytest.mark.parametrize(
    ("samples", "labels", "message"),
    [
        ([_sample("a", 0, "train"), _sample("b", 1, "holdout")], ["x", "y"], "without training photos"),
        ([_sample("a", 0, "train"), _sample("b", 1, "train")], ["x", "y"], "no holdout"),
        ([_sample("a", 0, "train"), _sample("a", 1, "train")], ["x", "y"], "unique"),
        ([_sample("a", 0, "train"), _sample("b", 2, "holdout")], ["x", "y"], "unknown split or label"),
        ([_sample("a", 0, "test")], ["x", "y"], "unknown split or label"),
        ([_sample("a", 0, "train")], ["x"], "two distinct labels"),
    ],
)
def test_pipeline_refuses_unusable_inputs_before_any_work(samples, labels, message, tmp_path):
    with pytest.raises(PipelineError, match=message):
        linear_probe_pipeline(
            samples=samples,
            labels=labels,
            backbone=BackboneConfig(weights_path=str(tmp_path / "never-read.pth")),
            preprocessing=Preprocessing(),
            probe=LinearProbeConfig(),
            out_dir=tmp_path,
        )


def test_feature_cache_computes_only_new_samples():
    torch = pytest.importorskip("torch")
    samples = [_sample(k, 0, "train") for k in "abcd"]
    asked = []

    def extract(todo, on_batch):
        asked.append([s.key for s in todo])
        on_batch(len(todo), len(todo))
        return torch.stack([torch.full((3,), float(ord(s.key))) for s in todo])

    def run(items, namespace="ns"):
        return features_cached(
            samples=items, cache=cache, namespace=namespace, extract=extract, progress=lambda fraction: None
        )

    cache: dict = {}
    first, computed = run(samples)
    assert computed == 4 and sorted(cache) == ["ns:a", "ns:b", "ns:c", "ns:d"]
    more = [*samples, _sample("e", 0, "train")]
    second, computed = run(more)
    assert computed == 1 and asked[-1] == ["e"]
    assert torch.equal(second[:4], first) and second[4, 0] == ord("e")
    _, computed = run(more, namespace="other")
    assert computed == 5  # other weights or preprocessing: nothing reused
