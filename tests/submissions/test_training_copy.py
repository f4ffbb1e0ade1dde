"""The private copy models train on keeps what the volunteer sent (issue 16).

Lossless or small sources: a PNG with exactly the decoded pixels. Large lossy photos: a JPEG
at quality 95 without chroma subsampling. Either way re-encoded from pixels, upright and
without metadata.
"""
import hashlib
import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image, JpegImagePlugin

from common.images import TRAINING_JPEG_QUALITY, image_sanitize
from tests.submissions.test_upload_api import _post

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000}


def _sanitize(data: bytes):
    return image_sanitize(upload=io.BytesIO(data), size=len(data), **LIMITS)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _digit() -> Image.Image:
    """A 28x28 greyscale digit-like image with every grey level a JPEG would blur."""
    rng = np.random.default_rng(3)
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 10:14] = 255
    pixels[4:8, 6:18] = rng.integers(90, 255, size=(4, 12))
    return Image.fromarray(pixels, mode="L")


def _photo(size=(1600, 1200)) -> Image.Image:
    """Smooth colour gradients with fine noise: photo-like, so a JPEG is much smaller than a PNG."""
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    rng = np.random.default_rng(7)
    rgb = np.stack([x * 200 + 20, y * 180 + 30, (1 - x) * 150 + 50], axis=-1) + rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def test_a_small_greyscale_png_round_trips_without_loss():
    digit = _digit()
    stored = _sanitize(_encode(digit, "PNG"))
    assert stored.content_extension == ".png"
    image = Image.open(io.BytesIO(stored.content))
    assert image.format == "PNG" and image.size == (28, 28)
    assert np.array_equal(np.asarray(image.convert("L")), np.asarray(digit))


def test_a_small_jpeg_is_kept_as_png_of_its_decoded_pixels():
    source = _encode(_photo((240, 160)), "JPEG", quality=80)
    stored = _sanitize(source)
    decoded = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    assert stored.content_extension == ".png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored.content))), decoded)


def test_a_large_jpeg_gets_a_high_quality_4_4_4_copy_without_metadata():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 29.0)  # GPS latitude
    source = _encode(_photo(), "JPEG", quality=92, exif=exif, comment=b"secret notes")
    stored = _sanitize(source)

    image = Image.open(io.BytesIO(stored.content))
    assert stored.content_extension == ".jpg" and image.format == "JPEG"
    assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4: colour at full resolution
    # Quality 95's tables: the same as a fresh quality-95 encode of any picture.
    reference = Image.open(io.BytesIO(_encode(Image.new("RGB", (8, 8)), "JPEG", quality=TRAINING_JPEG_QUALITY)))
    assert image.quantization == reference.quantization
    assert image.size == (1200, 1600)  # upright
    assert not image.getexif() and "comment" not in image.info and "icc_profile" not in image.info
    assert b"Exif" not in stored.content and b"secret" not in stored.content
    # Visually lossless: the copy is within a few levels of the decoded upload everywhere but edges.
    upright = np.asarray(Image.open(io.BytesIO(source)).transpose(Image.Transpose.ROTATE_270), dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - upright).mean() < 2.5


@pytest.mark.parametrize(("fmt", "kwargs", "extension"), [
    ("PNG", {}, ".png"),
    ("WEBP", {"lossless": True}, ".png"),
    ("WEBP", {"quality": 90}, ".jpg"),
])
def test_lossless_sources_keep_their_pixels_and_lossy_ones_get_the_jpeg(fmt, kwargs, extension):
    photo = _photo((800, 600))
    source = _encode(photo, fmt, **kwargs)
    stored = _sanitize(source)
    assert stored.content_extension == extension
    if extension == ".png":
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored.content))), np.asarray(photo))


def test_a_photo_larger_than_the_models_input_gets_the_jpeg():
    stored = _sanitize(_encode(_photo((400, 300)), "JPEG", quality=90))
    assert stored.content_extension == ".jpg"


def test_a_lossless_source_larger_than_the_stored_size_is_resized_into_a_jpeg():
    stored = _sanitize(_encode(Image.new("RGB", (2400, 1800), (30, 90, 150)), "PNG"))
    assert stored.content_extension == ".jpg" and (stored.width, stored.height) == (2000, 1500)


def test_a_png_with_text_chunks_and_icc_keeps_none_of_them():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "home address")
    source = _encode(_digit().convert("RGB"), "PNG", pnginfo=info, icc_profile=b"\0" * 128)
    stored = _sanitize(source)
    image = Image.open(io.BytesIO(stored.content))
    assert not image.text and "icc_profile" not in image.info and b"home address" not in stored.content


@pytest.mark.django_db
def test_the_training_copy_is_stored_and_served_as_what_it_is(volunteer_api, challenge, client, staff):
    from submissions.models import Photo

    assert _post(volunteer_api, challenge, _encode(_digit(), "PNG"), name="d.png").status_code == 201
    photo = Photo.objects.get()
    assert photo.image.name.endswith(".png")
    with default_storage.open(photo.image.name) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == photo.sha256  # the dedup/snapshot hash is of the stored copy
    client.force_login(staff)
    response = client.get(f"/photos/{photo.public_id}/image")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
