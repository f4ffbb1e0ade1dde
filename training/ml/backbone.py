"""Pretrained MobileNetV2 backbone: torchvision's architecture, local or torchvision weights.

The returned module is torchvision's ``MobileNetV2`` with ``classifier`` replaced by
``Identity``, so ``backbone(x)`` gives the 1280-d globally pooled features the linear head
is trained on, and ``classifier_assemble`` can put a real head back in torchvision's layout.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torchvision

from training.ml.config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, Preprocessing
from training.ml.errors import WeightsError

TORCHVISION_WEIGHTS = "MobileNet_V2_Weights.IMAGENET1K_V1"

# A full torchvision checkpoint also carries the ImageNet head; it is legitimately dropped.
_IGNORED_PREFIXES = ("classifier.",)


def backbone_load(*, config: BackboneConfig) -> torch.nn.Module:
    """Build MobileNetV2 with pretrained weights, pooled-feature output, in eval mode."""
    if config.weights_path is None:
        if config.width_mult != 1.0:
            raise WeightsError(f"torchvision publishes MobileNetV2 weights for width 1.0 only, not {config.width_mult}")
        weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
        model = torchvision.models.mobilenet_v2(weights=weights)
    else:
        model = torchvision.models.mobilenet_v2(weights=None, width_mult=config.width_mult)
        state = _state_dict_read(Path(config.weights_path))
        _state_dict_apply(model, state, source=config.weights_path)
    model.classifier = torch.nn.Identity()
    model.eval()
    model.requires_grad_(False)  # frozen: the linear probe never trains it
    return model


def weights_fingerprint(*, config: BackboneConfig) -> str:
    """sha256 (hex) of the local weights file, or torchvision's weights name."""
    if config.weights_path is None:
        return f"torchvision:{TORCHVISION_WEIGHTS}"
    path = Path(config.weights_path)
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    return digest.hexdigest()


def preprocessing_recommended(*, config: BackboneConfig) -> Preprocessing:
    """The input normalisation the weights were trained with."""
    if config.weights_path is None:
        # torchvision's IMAGENET1K_V1 recipe: resize 256, crop 224, ImageNet mean/std.
        return Preprocessing(input_size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    # The shared Keras-converted weights want [-1, 1] (their SOURCE.md); it is the default.
    return Preprocessing()


def backbone_feature_dim(backbone: torch.nn.Module) -> int:
    """Width of the pooled feature vector (1280 for MobileNetV2 with width <= 1)."""
    dim = getattr(backbone, "last_channel", None)
    if not isinstance(dim, int):
        raise TypeError("expected a torchvision MobileNetV2 from backbone_load")
    return dim


def _state_dict_read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        # weights_only: a weights file is data; never let it run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or pickled files
        raise WeightsError(f"cannot load weights file {path}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a plain state dict of tensors")
    return state


def _state_dict_apply(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    expected = {k for k in model.state_dict() if k.startswith("features.")}
    given = {k for k in state if not k.startswith(_IGNORED_PREFIXES)}
    unexpected = sorted(given - expected)
    missing = sorted(expected - given)
    if unexpected or missing:
        # Silently ignoring keys (strict=False) is how a renamed layer ends up random.
        raise WeightsError(
            f"{source} does not fit torchvision mobilenet_v2 features: "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}, {len(missing)} missing keys {missing[:5]}"
        )
    try:
        model.load_state_dict({k: state[k] for k in given}, strict=False)
    except RuntimeError as exc:  # shape mismatches, e.g. another width_mult
        raise WeightsError(f"{source} does not fit mobilenet_v2: {exc}") from exc
