"""Similarity to ImageNet, measured: real photos come out similar, upscaled digits dissimilar."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from PIL import Image

from tests.ml.conftest import photo_files
from tests.ml.digits import digit_images
from training.ml.config import Preprocessing
from training.ml.similarity import (
    LayerFeatures,
    imagenet_similarity_measure,
    layer_features_extract,
    similarity_from_features,
)


def test_one_pass_gives_the_backbone_output_and_lower_features(tiny_backbone):
    images = [Image.new("RGB", (80, 64), color) for color in ("red", "navy", "olive")]
    pre = Preprocessing(input_size=64, resize=64)
    layers = layer_features_extract(
        backbone=tiny_backbone, images=images, preprocessing=pre, block=6, grid=2, batch_size=2
    )
    assert layers.top.shape == (3, 1280) and layers.lower.shape == (3, 32 * 4)
    from training.ml.images import image_to_array

    x = torch.stack([torch.from_numpy(image_to_array(i, preprocessing=pre)) for i in images])
    with torch.no_grad():
        assert torch.allclose(layers.top, tiny_backbone(x), atol=1e-5)
        lower = torch.nn.functional.adaptive_avg_pool2d(tiny_backbone.features[:7](x), 2).flatten(1)
    assert torch.allclose(layers.lower, lower, atol=1e-5)
    with pytest.raises(ValueError):
        layer_features_extract(backbone=tiny_backbone, images=images, preprocessing=pre, block=18)


def _synthetic(top_separates: bool) -> tuple[LayerFeatures, list[int]]:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat(20)
    signal = (y[:, None].float() * 2 - 1) * 1.5
    informative = torch.randn(40, 16, generator=generator) + signal
    noise = torch.randn(40, 16, generator=generator)
    top, lower = (informative, noise) if top_separates else (noise, informative)
    return LayerFeatures(lower=lower, top=top, block=6, grid=2), y.tolist()


def test_score_sign_follows_which_layer_separates():
    features, y = _synthetic(top_separates=True)
    similar = similarity_from_features(features=features, targets=y)
    assert similar.top_accuracy > 0.9 and similar.lower_accuracy < 0.75 and similar.score > 0.3 and similar.similar
    features, y = _synthetic(top_separates=False)
    unlike = similarity_from_features(features=features, targets=y)
    assert unlike.score < -0.3 and not unlike.similar and unlike.label == "dissimilar"
    assert json.loads(json.dumps(unlike.to_dict(), allow_nan=False))["label"] == "dissimilar"
    # Deterministic: same inputs, same numbers.
    assert similarity_from_features(features=features, targets=y).score == unlike.score
    with pytest.raises(ValueError):
        similarity_from_features(features=features, targets=[0] * 39 + [1])  # one photo of a label


@pytest.mark.slow
def test_ants_and_bees_are_similar_to_imagenet(ml_backbone, hymenoptera_dir):
    files = photo_files(hymenoptera_dir / "train")
    picked = [f for f in files if f[1] == "ants"][:20] + [f for f in files if f[1] == "bees"][:20]
    measured = imagenet_similarity_measure(
        backbone=ml_backbone,
        images=[partial(Image.open, path) for path, _ in picked],
        targets=[0 if label == "ants" else 1 for _, label in picked],
        preprocessing=Preprocessing(input_size=96, resize=96),
    )
    print(f"\nants/bees: {measured.to_dict()}")
    assert measured.similar and measured.label == "similar"
    assert measured.top_accuracy > measured.lower_accuracy
    assert measured.count == 40 and measured.folds == 5


@pytest.mark.slow
def test_digits_are_dissimilar_to_imagenet(ml_backbone):
    images, targets = digit_images(count=150, size=64)
    measured = imagenet_similarity_measure(
        backbone=ml_backbone, images=images, targets=targets, preprocessing=Preprocessing(input_size=64, resize=64)
    )
    print(f"\ndigits: {measured.to_dict()}")
    assert not measured.similar and measured.label == "dissimilar"
    assert measured.lower_accuracy > measured.top_accuracy
    assert measured.lower_accuracy > 0.8  # the lower layers do separate digits: the data is learnable
