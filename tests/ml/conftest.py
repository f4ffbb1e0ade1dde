"""Fixtures for the ML core tests: real weights and real photos, skipped (with the reason) if absent.

Paths come from PLATFORM_TEST_WEIGHTS and PLATFORM_TEST_HYMENOPTERA; relative values (and
the defaults) are resolved against the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WEIGHTS = "../shared/data/weights/mobilenet_v2_imagenet_from_keras.pth"
DEFAULT_HYMENOPTERA = "../shared/data/hymenoptera"
# Documented in the weights' SOURCE.md; a different file would make the thresholds meaningless.
WEIGHTS_SHA256 = "30f67bef96e04bc01924cfb4d33d91e6056c8b4f0314021363d494ed078bf344"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}  # the set's .gif is an "image not found" placeholder


def _resolve(env: str, default: str) -> Path:
    raw = Path(os.environ.get(env) or default)
    return (raw if raw.is_absolute() else REPO_ROOT / raw).resolve()


@pytest.fixture(scope="session")
def ml_weights_path() -> Path:
    """The converted MobileNetV2 backbone weights (features.* state dict)."""
    path = _resolve("PLATFORM_TEST_WEIGHTS", DEFAULT_WEIGHTS)
    if not path.is_file():
        pytest.skip(f"weights not found at {path} (set PLATFORM_TEST_WEIGHTS)")
    return path


@pytest.fixture(scope="session")
def hymenoptera_dir() -> Path:
    """The ants/bees photo set with train/ and val/ folders."""
    path = _resolve("PLATFORM_TEST_HYMENOPTERA", DEFAULT_HYMENOPTERA)
    if not (path / "train").is_dir() or not (path / "val").is_dir():
        pytest.skip(f"ants/bees photos not found at {path} (set PLATFORM_TEST_HYMENOPTERA)")
    return path


def photo_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, label) for every photo under folder/<label>/, sorted; placeholders skipped."""
    return sorted((f, f.parent.name) for f in folder.glob("*/*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


@pytest.fixture(scope="session")
def ml_backbone(ml_weights_path):
    """The real backbone, loaded once per session (callers must not modify it)."""
    from training.ml.backbone import backbone_load
    from training.ml.config import BackboneConfig

    return backbone_load(config=BackboneConfig(weights_path=str(ml_weights_path)))


@pytest.fixture
def tiny_backbone():
    """A random-init MobileNetV2 backbone: architecture-true, no weights file needed."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None)
    net.classifier = torch.nn.Identity()
    return net.eval().requires_grad_(False)
