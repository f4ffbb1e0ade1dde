"""Naming an app's preprocessing mistake from one photo and the tensor the app built for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.ml.config import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from training.ml.images import image_to_array
from training.ml.parity import preprocessing_diagnose

PRE = Preprocessing()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A colourful, structured, non-square picture (so every mistake changes the tensor)."""
    y, x = np.mgrid[0:300, 0:420]
    pixels = np.stack([x * 255 // 419, y * 255 // 299, (x + y) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 90, 280), fill=(250, 30, 30))  # at the left edge: cropped away
    draw.ellipse((170, 110, 250, 190), fill=(20, 40, 240))
    return image


def _squash(image):
    return image_to_array(image.resize((224, 224), Image.Resampling.BILINEAR), preprocessing=PRE)


MISTAKES = {
    "imagenet_mean_std": lambda im: image_to_array(
        im, preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    ),
    "scaled_0_1_no_mean_std": lambda im: image_to_array(im, preprocessing=Preprocessing(mean=(0, 0, 0), std=(1, 1, 1))),
    "bgr_channel_order": lambda im: image_to_array(im, preprocessing=PRE)[::-1],
    "squashed_no_center_crop": _squash,
    "center_crop_without_resize": lambda im: image_to_array(im, preprocessing=Preprocessing(resize=300)),
    "resize_to_input_size": lambda im: image_to_array(im, preprocessing=Preprocessing(resize=224)),
    "hwc_memory_read_as_chw": lambda im: image_to_array(im, preprocessing=PRE).transpose(1, 2, 0).reshape(3, 224, 224),
}


def test_correct_input_passes_even_with_another_resizer(photo):
    assert preprocessing_diagnose(image=photo, app_array=image_to_array(photo, preprocessing=PRE), preprocessing=PRE).ok
    # An app resizing with bicubic instead of bilinear is not the problem people complain about.
    size = (int(256 * 420 / 300), 256)
    bicubic = photo.resize(size, Image.Resampling.BICUBIC)
    diagnosis = preprocessing_diagnose(
        image=photo, app_array=image_to_array(bicubic, preprocessing=PRE)[None], preprocessing=PRE
    )
    assert diagnosis.ok, diagnosis


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_common_mistake_is_named(photo, mistake):
    diagnosis = preprocessing_diagnose(image=photo, app_array=MISTAKES[mistake](photo), preprocessing=PRE)
    assert not diagnosis.ok
    assert diagnosis.likely_cause == mistake, diagnosis.candidates
    json.dumps(diagnosis.to_dict(), allow_nan=False)


def test_layout_and_shape_mistakes(photo):
    hwc = image_to_array(photo, preprocessing=PRE).transpose(1, 2, 0)
    assert preprocessing_diagnose(image=photo, app_array=hwc, preprocessing=PRE).likely_cause == (
        "hwc_layout_instead_of_nchw"
    )
    wrong = preprocessing_diagnose(image=photo, app_array=np.zeros((3, 160, 160)), preprocessing=PRE)
    assert wrong.likely_cause == "wrong_shape_3x160x160" and wrong.mean_abs_diff is None
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 224, 224))
    assert preprocessing_diagnose(image=photo, app_array=noise, preprocessing=PRE).likely_cause == "unknown"
