"""THE definition of input preprocessing, in numpy + Pillow only (no torch).

Training, evaluation, ONNX verification and the mobile reference client all call
``image_to_array``; a second implementation anywhere is how apps end up feeding a model
something it was not trained on. The numbers match torchvision's
``Resize(resize) -> CenterCrop(input_size) -> ToTensor() -> Normalize(mean, std)`` on PIL
images (the tests check this), so torchvision-trained weights see what they expect.

EXIF orientation is NOT applied here: uploads are ``exif_transpose``d (and stripped) when
they are stored, and an app passes the upright camera frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from training.ml.config import Preprocessing
from training.ml.errors import ImageDecodeError

#: An image, or a zero-argument callable that opens one (lazily, e.g. from storage).
ImageSource = Callable[[], Image.Image] | Image.Image

# Transparent pixels are composited onto white: what viewers (and the volunteer) saw.
_ALPHA_BACKGROUND = (255, 255, 255, 255)


def image_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB version of any Pillow image (L, LA, P, RGBA, CMYK, I;16, ...)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        # Pillow clips 16-bit values at 255 on convert("L"); scale the full range instead.
        gray = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def resized_size(width: int, height: int, *, shorter_side: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``shorter_side`` (longer side truncated, as torchvision)."""
    if width <= height:
        return shorter_side, int(shorter_side * height / width)
    return int(shorter_side * width / height), shorter_side


def center_crop_box(width: int, height: int, *, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred ``size`` square, rounded like torchvision."""
    # torchvision uses Python's round(), i.e. round-half-to-even; copy it for identical pixels.
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return left, top, left + size, top + size


def image_to_array(image: Image.Image, *, preprocessing: Preprocessing) -> np.ndarray:
    """Preprocess one image into a float32 CHW array ready to be stacked into a batch."""
    rgb = image_rgb(image)
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ValueError("image has no pixels")
    size = resized_size(width, height, shorter_side=preprocessing.resize)
    if size != (width, height):
        # Pillow's BILINEAR widens its kernel when shrinking, i.e. it is antialiased.
        rgb = rgb.resize(size, resample=Image.Resampling.BILINEAR)
    rgb = rgb.crop(center_crop_box(*size, size=preprocessing.input_size))
    pixels = np.asarray(rgb, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    # Subtract then divide (not multiply by 1/std): bit-for-bit what torchvision's Normalize does.
    pixels = (pixels - mean) / std
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def image_source_array(source: ImageSource, *, index: int, preprocessing: Preprocessing) -> np.ndarray:
    """Open (if lazy), preprocess and release one image; a failure names its index."""
    try:
        if isinstance(source, Image.Image):
            return image_to_array(source, preprocessing=preprocessing)  # the caller owns it
        image = source()
        try:
            return image_to_array(image, preprocessing=preprocessing)
        finally:
            image.close()  # we opened it: free the file handle and the decoded pixels now
    except Exception as exc:
        message = f"image {index} could not be decoded: {type(exc).__name__}: {exc}"
        raise ImageDecodeError(message, index=index) from exc


def image_batches(
    images: Iterable[ImageSource], *, preprocessing: Preprocessing, batch_size: int
) -> Iterator[np.ndarray]:
    """Yield float32 NCHW batches; only the current batch of decoded images is alive.

    One buffer is reused, so consume (or copy) each batch before asking for the next.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    size = preprocessing.input_size
    buffer = np.empty((batch_size, 3, size, size), dtype=np.float32)
    filled = 0
    for index, source in enumerate(images):
        buffer[filled] = image_source_array(source, index=index, preprocessing=preprocessing)
        filled += 1
        if filled == batch_size:
            yield buffer
            filled = 0
    if filled:
        yield buffer[:filled]
