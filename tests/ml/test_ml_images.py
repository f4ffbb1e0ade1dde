"""Preprocessing: THE definition shared by training, verification and app clients."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.ml.config import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from training.ml.errors import ImageDecodeError
from training.ml.images import image_batches, image_rgb, image_to_array

DEFAULT = Preprocessing()


def _random_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_output_shape_dtype_and_layout():
    array = image_to_array(_random_rgb(300, 200), preprocessing=DEFAULT)
    assert array.shape == (3, 224, 224)
    assert array.dtype == np.float32
    assert array.flags["C_CONTIGUOUS"]


def test_default_mean_std_maps_pixels_to_minus_one_one():
    black = image_to_array(Image.new("RGB", (256, 256), (0, 0, 0)), preprocessing=DEFAULT)
    white = image_to_array(Image.new("RGB", (256, 256), (255, 255, 255)), preprocessing=DEFAULT)
    noisy = image_to_array(_random_rgb(256, 300), preprocessing=DEFAULT)  # no resize: noise survives
    assert np.all(black == -1.0) and np.all(white == 1.0)
    assert noisy.min() >= -1.0 and noisy.max() <= 1.0
    assert noisy.min() < -0.9 and noisy.max() > 0.9  # the whole range is used


def test_channel_order_is_rgb():
    array = image_to_array(Image.new("RGB", (256, 256), (255, 0, 0)), preprocessing=DEFAULT)
    assert np.all(array[0] == 1.0) and np.all(array[1] == -1.0) and np.all(array[2] == -1.0)


@pytest.mark.parametrize("size", [(512, 512), (768, 512), (512, 768)])
def test_center_crop_removes_a_border_and_keeps_the_centre(size):
    width, height = size
    # Resize takes the shorter side to 256 (scale 2 for 512), the crop then drops 16 resized
    # px (32 original px) on the short axis and more on the long one. A 20 px red frame must
    # vanish entirely (antialiasing blurs ~2 resized px, still inside the dropped margin).
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 255, 0), (20, 20, width - 20, height - 20))
    cx, cy = width // 2, height // 2
    image.paste((0, 0, 255), (cx - 4, cy - 4, cx + 4, cy + 4))  # marker: must land in the middle
    array = image_to_array(image, preprocessing=DEFAULT)
    red = array[0] > -1.0
    assert not red.any(), "part of the border survived the centre crop"
    blue = np.argwhere(array[2] > 0.9)
    assert len(blue) > 0
    assert np.allclose(blue.mean(axis=0), [111.5, 111.5], atol=1.0)


@pytest.mark.parametrize("size", [(333, 501), (501, 333), (257, 256), (1000, 700), (224, 224), (100, 80), (999, 1)])
@pytest.mark.parametrize("preprocessing", [DEFAULT, Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=232)])
def test_matches_torchvision_pipeline(size, preprocessing):
    """Same numbers as torchvision's Resize -> CenterCrop -> ToTensor -> Normalize on PIL."""
    torch = pytest.importorskip("torch")
    from torchvision import transforms

    reference = transforms.Compose(
        [
            transforms.Resize(preprocessing.resize),
            transforms.CenterCrop(preprocessing.input_size),
            transforms.ToTensor(),
            transforms.Normalize(preprocessing.mean, preprocessing.std),
        ]
    )
    image = _random_rgb(*size, seed=sum(size))
    expected = reference(image).numpy()
    actual = image_to_array(image, preprocessing=preprocessing)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-6
    del torch


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400), dtype=np.uint8))
    array = image_to_array(gray, preprocessing=DEFAULT)
    assert array.shape == (3, 224, 224)
    assert np.array_equal(array[0], array[1]) and np.array_equal(array[1], array[2])
    assert np.array_equal(array, image_to_array(gray.convert("RGB"), preprocessing=DEFAULT))


def test_rgba_transparent_pixels_become_white_and_opaque_ones_stay():
    rgb = _random_rgb(300, 300)
    opaque = rgb.copy()
    opaque.putalpha(255)
    assert np.array_equal(image_to_array(opaque, preprocessing=DEFAULT), image_to_array(rgb, preprocessing=DEFAULT))
    clear = rgb.copy()
    clear.putalpha(0)
    assert np.all(image_to_array(clear, preprocessing=DEFAULT) == 1.0)


def test_palette_images_with_and_without_transparency():
    rgb = _random_rgb(320, 240)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert np.array_equal(
        image_to_array(palette, preprocessing=DEFAULT), image_to_array(palette.convert("RGB"), preprocessing=DEFAULT)
    )
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])  # one palette entry transparent
    assert image_rgb(palette).mode == "RGB"
    assert image_to_array(palette, preprocessing=DEFAULT).shape == (3, 224, 224)


@pytest.mark.parametrize("mode", ["1", "LA", "CMYK", "I", "F", "YCbCr"])
def test_other_modes_are_converted(mode):
    image = _random_rgb(260, 300).convert("L" if mode in ("1", "LA", "I", "F") else "RGB").convert(mode)
    array = image_to_array(image, preprocessing=DEFAULT)
    assert array.shape == (3, 224, 224) and array.dtype == np.float32
    assert np.isfinite(array).all() and array.min() >= -1.0 and array.max() <= 1.0


def test_sixteen_bit_grayscale_uses_the_full_range():
    values = np.full((256, 256), 65535, dtype=np.uint16)
    values[:, :128] = 0
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    array = image_to_array(image, preprocessing=DEFAULT)
    assert array.max() == 1.0 and array.min() == -1.0  # Pillow's own convert would clip to 255/65535


def test_preprocessing_validation_and_manifest_round_trip():
    with pytest.raises(ValueError):
        Preprocessing(input_size=224, resize=200)
    with pytest.raises(ValueError):
        Preprocessing(std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError):
        Preprocessing(mean=(0.5, 0.5))
    custom = Preprocessing(input_size=160, resize=183, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    assert custom.mean == (0.1, 0.2, 0.3)  # lists from JSON become tuples
    manifest = custom.to_manifest()
    assert Preprocessing.from_manifest(manifest) == custom
    assert manifest["channel_order"] == "RGB" and manifest["layout"] == "NCHW"
    assert manifest["output"] == "probabilities" and manifest["crop"] == "center"
    with pytest.raises(ValueError):
        Preprocessing.from_manifest({**manifest, "channel_order": "BGR"})


def test_image_batches_stream_and_name_the_broken_image():
    opened = []

    def opener(i):
        def open_image():
            opened.append(i)
            return _random_rgb(64, 64, seed=i)

        return open_image

    small = Preprocessing(input_size=32, resize=32)
    batches = image_batches([opener(i) for i in range(5)], preprocessing=small, batch_size=2)
    first = next(batches)
    assert first.shape == (2, 3, 32, 32) and opened == [0, 1]  # lazy: nothing beyond the batch
    assert [len(b) for b in batches] == [2, 1]

    def broken():
        raise OSError("truncated file")

    with pytest.raises(ImageDecodeError) as info:
        list(image_batches([opener(0), broken], preprocessing=DEFAULT, batch_size=4))
    assert info.value.index == 1 and "truncated" in str(info.value)
