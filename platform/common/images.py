"""Hostile-upload handling: every photo is decoded and re-encoded by Pillow before it is kept.

The client's file name and content type are never trusted: the format is what Pillow
finds in the bytes. What is stored is a fresh file made from the decoded pixels, with
EXIF orientation applied and no metadata at all (no EXIF/GPS, no ICC, no comment). Pixels
in another colour space (an embedded ICC profile: Display P3 from phones, Adobe RGB from
cameras) are converted to sRGB first, so the colours survive the profile being dropped.
A multi-picture JPEG (MPO: what many phone cameras write as ``.jpg``, with a depth map or
a second lens as the second frame) is the photo of its first frame.
The display copy and the thumbnail are made in the same pass from the same decoded
pixels, so every upload is decoded exactly once.

The private copy is what models train on, so it must not be worse than what an app feeds
the model (issue 16): a PNG (lossless) when the source was lossless (PNG, lossless WebP) and
kept its size, or when it is small (long side <= TRAINING_PNG_MAX_SIDE: a model upsamples
it, magnifying JPEG artefacts, and a small PNG costs little); otherwise a JPEG at quality
TRAINING_JPEG_QUALITY without chroma subsampling (4:4:4), visually lossless for photos a
model sees downscaled. The display copy and the thumbnail stay JPEG quality 90 (people see them).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import imagehash
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from common.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

register_heif_opener()
# A truncated file must fail, never load as a half-grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "HEIF"})
# Formats whose extra frames are not an animation: MPO's second picture is a depth map, a
# second lens or a preview. Only the first frame is the photo.
FIRST_FRAME_FORMATS = frozenset({"MPO"})
# The largest embedded colour profile converted (real ones are 0.5-60 KB); bigger is dropped.
_MAX_ICC_BYTES = 1024 * 1024
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# 2000, not 2048: libjpeg's draft() only scales by 1/2, 1/4, 1/8, and only when the result
# still covers the target. 12 MP phones (4000x3000, 4032x3024) then decode at half scale
# straight to about 2000 px: measured 140 ms instead of 434 ms CPU per photo (bench/).
STORED_MAX_SIDE = 2000
DISPLAY_MAX_SIDE = 1280
THUMBNAIL_MAX_SIDE = 320
JPEG_QUALITY = 90
THUMBNAIL_QUALITY = 85
# The training copy (measured in bench/training_copy.py; see the README).
TRAINING_JPEG_QUALITY = 95
# At or below the model's resize (256 px) a photo reaches the model pixel for pixel or
# upsampled, so every compression artefact counts; such a PNG is small anyway.
TRAINING_PNG_MAX_SIDE = 256
LOSSLESS_SOURCES = frozenset({"PNG"})  # plus WebP when its bitstream is VP8L (checked in the bytes)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SanitizedImage:
    """A decoded, re-encoded upload, ready to store."""

    content: bytes          # PNG or JPEG 4:4:4 q95, metadata-free, long side <= STORED_MAX_SIDE (private)
    display: bytes          # JPEG, metadata-free, long side <= DISPLAY_MAX_SIDE
    thumbnail: bytes        # JPEG, metadata-free, long side <= THUMBNAIL_MAX_SIDE
    width: int
    height: int
    source_format: str      # what Pillow found in the upload
    upload_sha256: str      # of the bytes the client sent (exact-duplicate key)
    sha256: str             # of `content`
    phash: str              # perceptual hash (hex), for near-duplicate detection
    content_extension: str = ".jpg"  # ".png" or ".jpg": the private copy's format


def image_sanitize(
    *, upload: BinaryIO, size: int, max_bytes: int, max_pixels: int, keep_clean_jpeg: bool = False
) -> SanitizedImage:
    """Check, decode and re-encode an uploaded image; raise a DomainError naming the problem.

    With ``keep_clean_jpeg``, an upload that already is a stored copy as this function writes
    it (see `_is_clean_jpeg`) keeps its exact bytes as ``content``: re-encoding a JPEG is not
    idempotent, and a data set moved between instances must keep its hashes. It is decoded
    and checked all the same; the display copy and thumbnail are made as always.
    """
    if size <= 0:
        raise ValidationFailed("The file is empty.", code="empty_file")
    if size > max_bytes:
        raise PayloadTooLarge(
            f"The file is {size} bytes; the limit is {max_bytes} bytes.", code="file_too_large"
        )
    upload_sha256 = upload_digest(upload)

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
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            # A known format whose header is cut short or malformed (Pillow raises plain
            # OSError/SyntaxError while parsing it): a client error, never a 500.
            raise ValidationFailed(
                "The image could not be decoded (truncated or corrupt file).", code="corrupt_image"
            ) from exc
        with image:
            lossless = (image.format or "").upper() in LOSSLESS_SOURCES or _is_lossless_webp(upload, image)
            sanitized = _decode_and_reencode(
                image, upload_sha256=upload_sha256, max_pixels=max_pixels, lossless=lossless
            )
            if keep_clean_jpeg:
                upload.seek(0)
                data = upload.read()
                if _is_clean_jpeg(data, stored_size=(sanitized.width, sanitized.height)):
                    return dataclasses.replace(
                        sanitized, content=data, sha256=upload_sha256, content_extension=".jpg"
                    )
            return sanitized


def _decode_and_reencode(
    image: Image.Image, *, upload_sha256: str, max_pixels: int, lossless: bool = False
) -> SanitizedImage:
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
    if getattr(image, "n_frames", 1) > 1 and source_format not in FIRST_FRAME_FORMATS:
        raise UnsupportedMediaType("Animated images are not accepted.", code="animated_image")

    if source_format in ("JPEG", "MPO") and max(width, height) > STORED_MAX_SIDE:
        # Let libjpeg decode at a reduced scale when that still covers the stored size.
        scale = STORED_MAX_SIDE / max(width, height)
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
        icc = image.info.get("icc_profile")
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error, Image.DecompressionBombError) as exc:
        # Decoders fail in their own ways on hostile bytes: pillow-heif raises EOFError on a
        # cut-off file and RuntimeError when libheif's security limits trip (found by fuzzing).
        raise ValidationFailed(
            "The image could not be decoded (truncated or corrupt file).", code="corrupt_image"
        ) from exc

    decoded_size = rgb.size
    rgb.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    # After the resize: the colour transform then costs at most the stored copy's pixels.
    rgb = _to_srgb(rgb, icc=icc)
    # A fresh image from raw pixels carries no info dict: no EXIF, GPS, ICC or comment;
    # the smaller copies are resized from it and inherit the empty info dict.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    as_png = (lossless and clean.size == decoded_size) or max(clean.size) <= TRAINING_PNG_MAX_SIDE
    content = png_bytes(clean) if as_png else jpeg_bytes(clean, quality=TRAINING_JPEG_QUALITY, subsampling=0)
    display = _shrunk(clean, DISPLAY_MAX_SIDE)
    # The thumbnail comes from the display copy: a quarter of the pixels to resample.
    thumbnail = _shrunk(display, THUMBNAIL_MAX_SIDE)
    # phash looks at a 32x32 version anyway: hashing the thumbnail costs far less than
    # hashing the full copy and gives the same bits within a distance of 1-2.
    phash = str(imagehash.phash(thumbnail))
    return SanitizedImage(
        content=content,
        display=jpeg_bytes(display, quality=JPEG_QUALITY),
        thumbnail=jpeg_bytes(thumbnail, quality=THUMBNAIL_QUALITY),
        width=clean.width,
        height=clean.height,
        source_format=source_format,
        upload_sha256=upload_sha256,
        sha256=hashlib.sha256(content).hexdigest(),
        phash=phash,
        content_extension=".png" if as_png else ".jpg",
    )


def _is_clean_jpeg(data: bytes, *, stored_size: tuple[int, int]) -> bool:
    """Whether `data` (already decoded successfully) is a stored copy: keeping it reveals nothing more.

    An RGB JPEG at its stored size (not resized, no orientation to apply), whose only
    application segment is the JFIF header, with no comment, and nothing hidden after the
    end-of-image marker (0xFFD9 cannot occur earlier in such a file: entropy-coded data
    stuffs every 0xFF byte, and the JFIF header and tables have none). Only the header is
    read here.
    """
    with Image.open(io.BytesIO(data)) as header:
        return (
            header.format == "JPEG"
            and header.mode == "RGB"
            and header.size == stored_size
            and all(marker == "APP0" and payload.startswith(b"JFIF\0") for marker, payload in header.applist)
            and not {"comment", "exif", "icc_profile", "xmp"} & set(header.info)
            and data.endswith(b"\xff\xd9")
            and data.count(b"\xff\xd9") == 1
        )


def upload_digest(upload: BinaryIO) -> str:
    """sha256 of the bytes the client sent (read in chunks; the stream is rewound)."""
    upload.seek(0)
    digest = _sha256_stream(upload)
    upload.seek(0)
    return digest


def _shrunk(image: Image.Image, max_side: int) -> Image.Image:
    """A copy whose long side is at most `max_side` (never enlarged)."""
    copy = image.copy()
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return copy


def jpeg_bytes(image: Image.Image, *, quality: int, subsampling: int = -1) -> bytes:
    out = io.BytesIO()
    # comment=b"": Pillow would otherwise copy a JPEG COM comment into the new file.
    # subsampling=0 keeps full-resolution colour (4:4:4); -1 is libjpeg's default 4:2:0.
    image.save(out, format="JPEG", quality=quality, subsampling=subsampling, comment=b"")
    return out.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG of fresh pixels: no text chunks, no ICC, no EXIF (the image has no info).

    compress_level 1: a third of the CPU of the default level for about 10% more bytes
    (measured on 500 px photos); fixed, so the same pixels always give the same bytes.
    """
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _is_lossless_webp(upload: BinaryIO, image: Image.Image) -> bool:
    """Whether a WebP upload's bitstream is VP8L (lossless), read from its RIFF chunks."""
    if (image.format or "").upper() != "WEBP":
        return False
    position = upload.tell()
    try:
        upload.seek(12)  # "RIFF" size "WEBP"
        for _ in range(64):  # a handful of chunks precede the bitstream (VP8X, ICCP, ANIM, ALPH)
            header = upload.read(8)
            if len(header) < 8:
                return False
            fourcc, size = header[:4], struct.unpack("<I", header[4:])[0]
            if fourcc in (b"VP8L", b"VP8 ", b"ANMF"):
                return fourcc == b"VP8L"
            upload.seek(size + (size & 1), io.SEEK_CUR)
        return False
    finally:
        upload.seek(position)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit greyscale (PNG) uses 0..65535: divide instead of clipping to white.
        # Other integer and float data has no fixed range: stretch its extrema.
        sixteen_bit = image.mode.startswith("I;16")
        image = image.convert("F")
        lo, hi = image.getextrema()
        if sixteen_bit or (0 <= lo and 255 < hi <= 65535):
            lo, span = 0.0, 65535.0
        elif 0 <= lo and hi <= 255:
            lo, span = 0.0, 255.0
        else:
            span = (hi - lo) or 1.0
        image = image.point(lambda v: (v - lo) * 255.0 / span).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_srgb(rgb: Image.Image, *, icc: bytes | None) -> Image.Image:
    """The RGB pixels converted from the upload's embedded colour profile to sRGB.

    Without a profile, the pixels are taken as sRGB already (what browsers assume). A
    profile that littlecms cannot read, or one for another colour model (a CMYK profile
    survives Pillow's CMYK-to-RGB conversion in ``info``), is ignored: the pixels are kept as
    decoded rather than refusing a photo over its metadata.
    """
    if not icc or len(icc) > _MAX_ICC_BYTES:
        return rgb
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if source.profile.xcolor_space.strip() != "RGB":
            return rgb
        return ImageCms.profileToProfile(rgb, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return rgb


def _sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()
