"""Hostile-upload handling: every photo is decoded and re-encoded by Pillow before it is kept.

The client's file name and content type are never trusted: the format is what Pillow
finds in the bytes. What is stored is a fresh JPEG made from the decoded pixels, with
EXIF orientation applied and no metadata at all (no EXIF/GPS, no ICC, no comment).
"""
from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import imagehash
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from common.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

register_heif_opener()
# A truncated file must fail, never load as a half-grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "HEIF"})
STORED_MAX_SIDE = 2048
JPEG_QUALITY = 90
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SanitizedImage:
    """A decoded, re-encoded upload, ready to store."""

    content: bytes          # JPEG, metadata-free
    width: int
    height: int
    source_format: str      # what Pillow found in the upload
    upload_sha256: str      # of the bytes the client sent (exact-duplicate key)
    sha256: str             # of `content`
    phash: str              # perceptual hash (hex), for near-duplicate detection


def image_sanitize(*, upload: BinaryIO, size: int, max_bytes: int, max_pixels: int) -> SanitizedImage:
    """Check, decode and re-encode an uploaded image; raise a DomainError naming the problem."""
    if size <= 0:
        raise ValidationFailed("The file is empty.", code="empty_file")
    if size > max_bytes:
        raise PayloadTooLarge(
            f"The file is {size} bytes; the limit is {max_bytes} bytes.", code="file_too_large"
        )
    upload.seek(0)
    upload_sha256 = _sha256_stream(upload)
    upload.seek(0)

    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; a bomb must be refused.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(upload)
        except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            if isinstance(exc, UnidentifiedImageError):
                raise UnsupportedMediaType(
                    "The file is not an image in a supported format (JPEG, PNG, WebP, HEIC).",
                    code="not_an_image",
                ) from exc
            raise PayloadTooLarge("The image has too many pixels.", code="too_many_pixels") from exc
        with image:
            return _decode_and_reencode(image, upload_sha256=upload_sha256, max_pixels=max_pixels)


def _decode_and_reencode(image: Image.Image, *, upload_sha256: str, max_pixels: int) -> SanitizedImage:
    source_format = (image.format or "").upper()
    if source_format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(
            f"{source_format or 'This'} images are not accepted; send JPEG, PNG, WebP or HEIC.",
            code="unsupported_format",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"The image is {width}x{height} pixels; the limit is {max_pixels} pixels.",
            code="too_many_pixels",
        )
    if getattr(image, "n_frames", 1) > 1:
        raise UnsupportedMediaType("Animated images are not accepted.", code="animated_image")

    if source_format == "JPEG" and max(width, height) > STORED_MAX_SIDE:
        # Let libjpeg decode at a reduced scale when that still covers the stored size.
        scale = STORED_MAX_SIDE / max(width, height)
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValidationFailed(
            "The image could not be decoded (truncated or corrupt file).", code="corrupt_image"
        ) from exc

    rgb.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    phash = str(imagehash.phash(rgb))
    out = io.BytesIO()
    # A fresh image from raw pixels carries no info dict: no EXIF, GPS, ICC or comment.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    clean.save(out, format="JPEG", quality=JPEG_QUALITY, comment=b"")
    content = out.getvalue()
    return SanitizedImage(
        content=content,
        width=clean.width,
        height=clean.height,
        source_format=source_format,
        upload_sha256=upload_sha256,
        sha256=hashlib.sha256(content).hexdigest(),
        phash=phash,
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping to white.
        image = image.convert("F")
        lo, hi = image.getextrema()
        span = (hi - lo) or 1.0
        image = image.point(lambda v: (v - lo) * 255.0 / span).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()
