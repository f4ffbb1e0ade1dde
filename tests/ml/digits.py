"""scikit-learn's 8x8 digits as upscaled RGB photos: data unlike ImageNet, for the ML tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def digit_images(*, count: int, size: int = 64, seed: int = 0) -> tuple[list[Image.Image], list[int]]:
    """``count`` digits (balanced over 0-9, random per seed) as ``size`` px RGB images and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.permutation(np.flatnonzero(digits.target == d))[: count // 10] for d in range(10)])
    images = [
        Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8), mode="L")
        .resize((size, size), Image.Resampling.BILINEAR)
        .convert("RGB")
        for i in index
    ]
    return images, [int(digits.target[i]) for i in index]
