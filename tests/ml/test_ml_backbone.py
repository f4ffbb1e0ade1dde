"""Backbone loading: real weights, strict key checks, fingerprints, streaming feature extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tests.ml.conftest import WEIGHTS_SHA256
from training.ml.backbone import TORCHVISION_WEIGHTS, backbone_load, weights_fingerprint
from training.ml.config import BackboneConfig, Preprocessing
from training.ml.errors import ImageDecodeError, WeightsError
from training.ml.features import features_extract


def test_real_weights_load_into_a_frozen_pooled_feature_extractor(ml_backbone, ml_weights_path):
    assert not ml_backbone.training
    assert isinstance(ml_backbone.classifier, torch.nn.Identity)
    assert not any(p.requires_grad for p in ml_backbone.parameters())
    with torch.inference_mode():
        out = ml_backbone(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, 1280)
    # The file's own numbers, not torchvision's random init.
    saved = torch.load(ml_weights_path, weights_only=True)
    assert torch.equal(ml_backbone.state_dict()["features.0.0.weight"], saved["features.0.0.weight"])
    assert weights_fingerprint(config=BackboneConfig(weights_path=str(ml_weights_path))) == WEIGHTS_SHA256


def test_state_dict_with_unexpected_keys_is_refused(tmp_path, ml_weights_path):
    state = torch.load(ml_weights_path, weights_only=True)
    state["features.19.0.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 unexpected keys \['features.19.0.weight'\]"):
        backbone_load(config=BackboneConfig(weights_path=str(path)))


def test_state_dict_with_missing_keys_or_wrong_shapes_is_refused(tmp_path):
    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    del state["features.3.conv.1.0.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing keys"):
        backbone_load(config=BackboneConfig(weights_path=str(path)))
    full = tmp_path / "full.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), full)
    with pytest.raises(WeightsError, match="does not fit"):
        backbone_load(config=BackboneConfig(weights_path=str(full), width_mult=0.5))


def test_full_torchvision_checkpoint_is_accepted_and_its_head_dropped(tmp_path):
    source = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "full.pth"
    torch.save(source.state_dict(), path)  # includes classifier.1.weight/bias
    loaded = backbone_load(config=BackboneConfig(weights_path=str(path)))
    assert torch.equal(loaded.features[18][0].weight, source.features[18][0].weight)


def test_unreadable_or_absent_weights_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        backbone_load(config=BackboneConfig(weights_path=str(tmp_path / "nope.pth")))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(WeightsError, match="cannot load"):
        backbone_load(config=BackboneConfig(weights_path=str(junk)))
    not_tensors = tmp_path / "strings.pth"
    torch.save({"features.0.0.weight": "text"}, not_tensors)
    with pytest.raises(WeightsError, match="plain state dict"):
        backbone_load(config=BackboneConfig(weights_path=str(not_tensors)))


def test_torchvision_weights_are_named_not_downloaded_for_a_fingerprint():
    assert weights_fingerprint(config=BackboneConfig()) == f"torchvision:{TORCHVISION_WEIGHTS}"
    with pytest.raises(WeightsError, match=r"width 1\.0"):
        backbone_load(config=BackboneConfig(width_mult=0.5))  # refused before any download


def test_features_extract_streams_one_image_at_a_time(tiny_backbone):
    """Openers are called lazily and every image is closed before the next is opened."""
    alive, peak, calls, progress = [0], [0], [], []

    def opener(i):
        def open_image():
            calls.append(i)
            image = Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8))
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
            close = image.close

            def tracked_close():
                alive[0] -= 1
                close()

            image.close = tracked_close
            return image

        return open_image

    def on_progress(done, total):
        progress.append((done, total, len(calls)))

    features = features_extract(
        backbone=tiny_backbone,
        images=[opener(i) for i in range(7)],
        preprocessing=Preprocessing(input_size=32, resize=32),
        batch_size=3,
        progress=on_progress,
    )
    assert features.shape == (7, 1280) and features.dtype == torch.float32
    assert not features.is_inference() and not features.requires_grad
    assert peak[0] == 1 and alive[0] == 0
    assert progress == [(3, 7, 3), (6, 7, 6), (7, 7, 7)]  # never decoded ahead of the batch


def test_features_match_a_plain_forward_pass_and_accept_generators(tiny_backbone):
    pre = Preprocessing(input_size=64, resize=72)
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (80, 90, 3), dtype=np.uint8)) for i in range(4)]
    got = features_extract(backbone=tiny_backbone, images=(im for im in images), preprocessing=pre, batch_size=3)
    from training.ml.images import image_to_array

    batch = torch.from_numpy(np.stack([image_to_array(im, preprocessing=pre) for im in images]))
    with torch.no_grad():
        expected = tiny_backbone.to(memory_format=torch.contiguous_format)(batch)
    assert torch.allclose(got, expected, atol=1e-4)
    assert all(im.im is not None for im in images)  # caller-owned images are not closed


def test_features_extract_names_the_undecodable_image(tiny_backbone):
    def broken():
        raise OSError("image file is truncated")

    with pytest.raises(ImageDecodeError) as info:
        features_extract(
            backbone=tiny_backbone,
            images=[lambda: Image.new("RGB", (40, 40)), broken],
            preprocessing=Preprocessing(input_size=32, resize=32),
        )
    assert info.value.index == 1
