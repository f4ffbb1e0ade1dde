"""A corpus of hostile and awkward uploads, generated in memory (small and fast).

Each case says what the upload pipeline must do with it; test_hostile.py asserts it.
Kept as code rather than committed binaries so every byte is explained.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image


@dataclass(frozen=True)
class Case:
    """One upload and the expected outcome (status; error code for refusals)."""

    id: str
    content: bytes
    status: int
    code: str | None = None
    name: str = "photo.jpg"
    content_type: str = "image/jpeg"
    # For accepted uploads: byte strings that must not survive into any stored copy.
    forbidden: tuple[bytes, ...] = field(default=())


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _photo_like(size=(96, 64)) -> Image.Image:
    """A gradient with some structure (not flat), so it survives re-encoding recognisably."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((200, 40, 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims `width` x `height` (a decompression bomb when huge)."""
    data = bytearray(_save(Image.new("1", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png_rgb16(width=32, height=24) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): a mid-grey to bright ramp."""
    rows = []
    for y in range(height):
        row = b"".join(struct.pack(">HHH", 20000 + 1000 * x, 30000, 40000 - 500 * y) for x in range(width))
        rows.append(b"\0" + row)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")


def png_grey16(width=32, height=24) -> bytes:
    """A 16-bit greyscale PNG with values 50000 (left) and 30000 (right) of 65535 (mid-grey, not white)."""
    # Built from raw little-endian samples: Pillow's paste() mangles values above 32767.
    row = [50000] * (width // 2) + [30000] * (width - width // 2)
    raw = struct.pack(f"<{width * height}H", *(row * height))
    return _save(Image.frombytes("I;16", (width, height), raw), "PNG")


def png_with_text_chunk(text: bytes) -> bytes:
    """A PNG carrying `text` in a tEXt chunk (metadata that must not be stored)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", text.decode())
    return _save(_photo_like(), "PNG", pnginfo=info)


def jpeg_with_gps() -> bytes:
    """A JPEG with EXIF GPS, a camera make and a comment: all must vanish."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    return _save(_photo_like((400, 300)), "JPEG", exif=exif, comment=b"secret location notes")


def zip_bytes() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload/evil.class", b"CAFEBABE-payload-marker")
    return out.getvalue()


def svg_with_script() -> bytes:
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<script>alert(document.cookie)</script><rect width="10" height="10"/></svg>'
    )


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG (print workflows): pure cyan on the left, pure yellow on the right."""
    image = Image.new("CMYK", (64, 32), (255, 0, 0, 0))
    image.paste((0, 0, 255, 0), (32, 0, 64, 32))
    return _save(image, "JPEG", quality=95)


def truncated_jpeg() -> bytes:
    data = _save(_photo_like((400, 300)), "JPEG", quality=95)
    return data[: len(data) // 2]


def truncated_heic() -> bytes:
    """A HEIC cut short: pillow-heif raises EOFError (not OSError) while decoding it."""
    data = _save(Image.linear_gradient("L").convert("RGB"), "HEIF")
    return data[:-50]


def mutated(seed: int, count: int) -> list[bytes]:
    """`count` randomly corrupted copies of small valid files in every accepted format."""
    import random

    rng = random.Random(seed)
    originals = [
        jpeg_with_gps(), cmyk_jpeg(), png_rgb16(), png_grey16(), png_with_text_chunk(b"text"), animated("WEBP"),
        _save(_photo_like((40, 30)), "WEBP"), _save(_photo_like((40, 30)), "HEIF"),
    ]
    variants = []
    for _ in range(count):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        variants.append(bytes(data))
    return variants


_JPEG = _save(_photo_like(), "JPEG", quality=90)
_PNG = _save(_photo_like(), "PNG")
_HTML = b"<html><body><script>alert('polyglot-marker')</script></body></html>"

REFUSED = [
    Case("zero-byte", b"", 400, "empty_file"),
    Case("truncated-jpeg", truncated_jpeg(), 400, "corrupt_image"),
    Case("jpeg-header-only", _JPEG[:200], 400, "corrupt_image"),
    Case("truncated-heic", truncated_heic(), 400, "corrupt_image", name="x.heic", content_type="image/heic"),
    Case("decompression-bomb", png_with_header(60_000, 60_000), 413, "too_many_pixels"),
    Case("huge-dimensions", png_with_header(10_000, 8_000), 413, "too_many_pixels"),
    Case("svg-with-script", svg_with_script(), 415, "not_an_image", name="x.svg", content_type="image/svg+xml"),
    Case("html-named-jpg", _HTML, 415, "not_an_image"),
    Case("zip-named-jpg", zip_bytes(), 415, "not_an_image"),
    # GIF is not an accepted format at all, animated or not.
    Case("animated-gif", animated("GIF"), 415, "unsupported_format", name="x.gif", content_type="image/gif"),
    # GIFAR: a GIF with a Java archive appended; refused as a GIF before the payload matters.
    Case("gifar", _save(Image.new("P", (8, 8)), "GIF") + zip_bytes(), 415, "unsupported_format"),
    Case("animated-webp", animated("WEBP"), 415, "animated_image", name="x.webp", content_type="image/webp"),
]

ACCEPTED = [
    # Polyglots: Pillow decodes the JPEG and stops at its end marker; the re-encoded copy
    # is made from pixels only, so the appended archive or HTML cannot survive.
    Case("jpeg-plus-zip", _JPEG + zip_bytes(), 201, forbidden=(b"PK\x03\x04", b"CAFEBABE-payload-marker")),
    Case("jpeg-plus-html", _JPEG + _HTML, 201, forbidden=(b"<script>", b"polyglot-marker")),
    Case("png-text-chunk-html", png_with_text_chunk(b"<script>alert('polyglot-marker')</script>"), 201,
         name="x.png", content_type="image/png", forbidden=(b"<script>", b"polyglot-marker")),
    # The name and content type are ignored: this is stored as what it is, a PNG.
    Case("png-named-jpg", _PNG, 201),
    Case("cmyk-jpeg", cmyk_jpeg(), 201),
    Case("png-16bit-grey", png_grey16(), 201, name="x.png", content_type="image/png"),
    Case("png-16bit-rgb", png_rgb16(), 201, name="x.png", content_type="image/png"),
    Case("exif-gps", jpeg_with_gps(), 201, forbidden=(b"Exif", b"SecretCam", b"secret location")),
]


# --- what phones and cameras send (issue 15) ----------------------------------------------
# Each case's pixels are "upright" quadrants (see UPRIGHT) unless it says otherwise, so the
# tests can check that every stored copy shows the photo the right way up.

QUADRANTS = ((220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240))  # TL, TR, BL, BR
SECRET = b"SECRET-META-7f3a"  # planted in every metadata field: must not survive anywhere


@dataclass(frozen=True)
class PhoneCase:
    """An accepted upload whose stored copies must be clean and upright."""

    id: str
    content: bytes
    # "landscape": the quadrant photo, wider than tall; "any": only cleanliness is checked.
    shape: str = "landscape"
    forbidden: tuple[bytes, ...] = (SECRET,)
    # A colour expected at the centre of the stored copy (flattened transparency, MPO frame).
    centre: tuple[int, int, int] | None = None


def upright(size=(60, 40)) -> Image.Image:
    """Four coloured quadrants: which corner holds which colour shows the orientation."""
    width, height = size
    image = Image.new("RGB", size)
    for index, colour in enumerate(QUADRANTS):
        x, y = index % 2, index // 2
        image.paste(colour, (x * width // 2, y * height // 2, (x + 1) * width // 2, (y + 1) * height // 2))
    return image


# EXIF orientation -> the transpose that undoes it (Pillow's exif_transpose applies the other way).
_STORE_AS = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _exif(orientation: int | None = None, *, gps: bool = True) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = SECRET.decode()  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        ifd = exif.get_ifd(0x8825)
        ifd[1], ifd[2], ifd[3], ifd[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    return exif


def oriented(fmt: str, orientation: int) -> bytes:
    """The upright photo stored sideways or mirrored, with the EXIF orientation that fixes it."""
    image = upright()
    if _STORE_AS[orientation] is not None:
        image = image.transpose(_STORE_AS[orientation])
    return _save(image, fmt, exif=_exif(orientation))


_XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.49N" exif:GPSLongitude="2,17.67E" '
    b'exif:UserComment="' + SECRET + b'"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def jpeg_with_xmp_gps() -> bytes:
    return _save(upright(), "JPEG", xmp=_XMP)


def png_with_xmp_gps() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _XMP.decode())
    return _save(upright(), "PNG", pnginfo=info)


def png_with_exif_gps() -> bytes:
    """GPS in a PNG eXIf chunk (what iOS writes when it saves a screenshot with location)."""
    return _save(upright(), "PNG", exif=_exif())


def with_icc(profile: bytes) -> bytes:
    return _save(upright(), "JPEG", icc_profile=profile, quality=95)


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def mpo() -> bytes:
    """A two-frame MPO: the photo, then a second picture (a depth map or the other lens)."""
    second = Image.new("RGB", (60, 40), (0, 0, 0))
    return _save(upright(), "MPO", save_all=True, append_images=[second], exif=_exif())


def palette_with_transparency() -> bytes:
    """A palette PNG whose index 0 is transparent: a transparent centre becomes white."""
    image = upright().quantize(colors=8)
    palette = image.getpalette()[:24] + [0, 0, 0] * 248
    image.putpalette([0, 0, 0] + palette[3:])  # index 0: black but transparent
    image.paste(0, (20, 12, 40, 28))
    return _save(image, "PNG", transparency=0)


def big_jpeg(side: int = 7071) -> bytes:
    """A side x side JPEG: 49,999,041 pixels, just under the 50 Mpx limit. About 1 s to make."""
    return _save(upright((side, side)), "JPEG", quality=50, exif=_exif(), comment=SECRET)


PHONE = [
    *(PhoneCase(f"{fmt.lower()}-orientation-{n}", oriented(fmt, n)) for fmt in ("JPEG", "PNG", "WEBP")
      for n in range(1, 9)),
    PhoneCase("progressive-jpeg", _save(upright(), "JPEG", progressive=True, exif=_exif(), comment=SECRET)),
    PhoneCase("mpo-two-frames", mpo()),
    PhoneCase("icc-srgb", with_icc(srgb_profile())),
    # A profile littlecms cannot read: ignored, never stored, never a refusal.
    PhoneCase("icc-garbage", with_icc(b"\0\0\0\x40" + SECRET * 4)),
    PhoneCase("jpeg-xmp-gps", jpeg_with_xmp_gps(), forbidden=(SECRET, b"GPSLatitude", b"xmpmeta")),
    PhoneCase("png-xmp-gps", png_with_xmp_gps(), forbidden=(SECRET, b"GPSLatitude", b"xmpmeta")),
    PhoneCase("png-exif-gps", png_with_exif_gps()),
    PhoneCase("palette-transparency", palette_with_transparency(), centre=(255, 255, 255)),
    PhoneCase("1x10000", _save(Image.new("RGB", (1, 10000), (30, 200, 30)), "PNG"), shape="any"),
    PhoneCase("10000x1", _save(Image.new("RGB", (10000, 1), (30, 200, 30)), "PNG"), shape="any"),
    PhoneCase("1x1", _save(Image.new("RGB", (1, 1), (30, 200, 30)), "PNG"), shape="any"),
]


def swapped_primaries_profile() -> bytes:
    """A valid ICC v2 RGB display profile whose red and green primaries are sRGB's green and red.

    Pillow can only make sRGB, Lab and XYZ profiles; this one is built by hand (header, tag
    table, matrix/TRC tags). A file's red channel then means green: only a colour conversion
    to sRGB shows the picture as its author saw it.
    """

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    def text_description(text: bytes) -> bytes:
        return b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 8 + b"\0" * 3 + b"\0" * 67

    gamma = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2 (u8Fixed8), padded
    tags = [
        (b"desc", text_description(b"swapped primaries")),
        (b"cprt", b"text\0\0\0\0" + b"none\0" + b"\0\0\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.3851, 0.7169, 0.0971)),  # sRGB's green (D50)
        (b"gXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", gamma), (b"gTRC", gamma), (b"bTRC", gamma),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    body = struct.pack(">I", len(tags)) + table + data
    header = (
        struct.pack(">I", 128 + len(body)) + b"\0\0\0\0" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
        + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48
    )
    assert len(header) == 128
    return header + body
