"""PNG renderings: valid PNG bytes of a sensible size, refusing malformed input."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from training.ml.plots import confusion_matrix_png, training_curves_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def _decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes every pixel: a truncated file fails here
    return image


def test_confusion_matrix_png():
    png = confusion_matrix_png(confusion=[[5, 1, 0], [2, 7, 1], [0, 0, 9]], labels=["ant", "bee", "wasp"])
    width, height = _size(png)
    assert 300 <= width <= 1500 and 300 <= height <= 1500
    image = _decoded(png)
    assert image.size == (width, height)
    # Not a blank canvas: the filled cells make dark pixels.
    assert image.convert("L").getextrema()[0] < 80
    bigger = confusion_matrix_png(confusion=[[1] * 12 for _ in range(12)], labels=[f"label {i}" for i in range(12)])
    assert _size(bigger)[0] > width  # grows with the number of labels
    assert confusion_matrix_png(confusion=[[5, 1, 0], [2, 7, 1], [0, 0, 9]], labels=["ant", "bee", "wasp"]) == png


def test_confusion_matrix_refuses_a_wrong_shape():
    with pytest.raises(ValueError):
        confusion_matrix_png(confusion=[[1, 2], [3, 4]], labels=["a", "b", "c"])


def test_training_curves_png_with_and_without_validation():
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_accuracy": 1 - 1 / (e + 1), "val_accuracy": 0.7}
        for e in range(1, 11)
    ]
    png = training_curves_png(history=history, best_epoch=6, title="fine_tune")
    width, height = _size(png)
    assert 600 <= width <= 2000 and 250 <= height <= 1000
    _decoded(png)
    # A linear probe's history (no accuracies, no validation) still renders.
    probe = [{"epoch": e, "train_loss": 1 / e, "val_loss": None, "val_accuracy": None} for e in range(1, 5)]
    assert _size(training_curves_png(history=probe)) == (width, height)
    with pytest.raises(ValueError):
        training_curves_png(history=[])
