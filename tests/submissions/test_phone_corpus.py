"""What phones, cameras and attackers send, through every entry point that stores a photo.

Each case of ``hostile.PHONE`` (every EXIF orientation on JPEG, PNG and WebP, progressive
JPEG, MPO, ICC profiles, GPS in XMP and in PNG eXIf, palette transparency, extreme shapes)
and the older ``hostile.ACCEPTED`` polyglots go through the volunteer upload, the app's
misprediction feedback and the admin's label example. Every stored copy must be a plain
RGB JPEG with no metadata (no EXIF, XMP, GPS, ICC, comment, no segment but JFIF, nothing
after the end marker) showing the photo upright. The 7071x7071 photo (just under the
50 Mpx limit) goes through each entry point once.
"""
from __future__ import annotations

import functools
import io
import struct

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from challenges.admin import LabelForm
from mobile_api.auth import key_generate
from mobile_api.models import AppKey
from submissions.models import Photo
from tests.submissions import hostile

pytestmark = pytest.mark.django_db

_METADATA_KEYS = {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment", "photoshop", "mp", "mpinfo"}


def _post_volunteer(client, challenge, content: bytes) -> list[bytes]:
    upload = io.BytesIO(content)
    upload.name = "IMG_0001.jpg"
    response = client.post("/api/v1/photos/", {"challenge": challenge.pk, "label": "ants", "image": upload},
                           format="multipart")
    assert response.status_code == 201, response.content[:300]
    return _copies(Photo.objects.get())


def _post_feedback(client, content: bytes) -> list[bytes]:
    upload = io.BytesIO(content)
    upload.name = "shot.jpg"
    response = client.post(
        "/api/mobile/v1/models/ants-bees/feedback",
        {"install_id": "install-0001", "predicted_label": "ants", "label": "bees", "photo": upload},
        format="multipart",
    )
    assert response.status_code == 201, response.content[:300]
    return _copies(Photo.objects.get())


def _post_label_example(project, content: bytes) -> list[bytes]:
    label = project.labels.get(name="ants")
    form = LabelForm(
        {"project": project.pk, "name": "ants", "description": "", "target_count": 200},
        {"example_photo": SimpleUploadedFile("example.jpg", content, content_type="image/jpeg")}, instance=label,
    )
    assert form.is_valid(), form.errors
    form.save()
    label.refresh_from_db()
    with default_storage.open(label.example_photo.name) as fh:
        return [fh.read()]


def _copies(photo: Photo) -> list[bytes]:
    copies = []
    for field in ("image", "display_image", "thumbnail"):
        with default_storage.open(getattr(photo, field).name) as fh:
            copies.append(fh.read())
    return copies


def _png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, read to its last byte (nothing may follow IEND)."""
    types, position = [], 8
    while position < len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        types.append(data[position + 4:position + 8])
        position += 12 + length
    assert position == len(data) and types[-1] == b"IEND"
    return types


def _assert_clean(data: bytes, *, forbidden: tuple[bytes, ...]) -> Image.Image:
    """A fresh copy with nothing hidden before or after its image data: a baseline RGB JPEG with
    only a JFIF header, or (the training copy of a lossless or small source) a PNG of IHDR, IDAT
    and IEND chunks only (no text, ICC, EXIF or other chunk)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        assert set(_png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}, _png_chunks(data)
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.mode == "RGB"
    else:
        assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9") and data.count(b"\xff\xd9") == 1
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert [marker for marker, _ in image.applist] == ["APP0"] and image.applist[0][1].startswith(b"JFIF\0")
    assert not image.getexif() and not _METADATA_KEYS & set(image.info), set(image.info)
    for payload in forbidden:
        assert payload not in data, payload
    image.load()
    return image


def _assert_upright(image: Image.Image) -> None:
    """The quadrant photo the right way up: red top-left, green top-right, blue bottom-left."""
    assert image.width > image.height, image.size
    width, height = image.size
    for (fx, fy), expected in zip(((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)), hostile.QUADRANTS):
        pixel = image.getpixel((int(fx * width), int(fy * height)))
        assert all(abs(a - b) <= 40 for a, b in zip(pixel, expected)), (image.size, (fx, fy), pixel, expected)


def _assert_case(copies: list[bytes], case: hostile.PhoneCase) -> None:
    for data in copies:
        image = _assert_clean(data, forbidden=case.forbidden)
        if case.shape == "landscape":
            _assert_upright(image)
        if case.centre is not None:
            pixel = image.getpixel((image.width // 2, image.height // 2))
            assert all(abs(a - b) <= 30 for a, b in zip(pixel, case.centre)), pixel


@pytest.fixture
def app_client(db) -> APIClient:
    key, prefix, digest = key_generate()
    AppKey.objects.create(name="Corpus app", prefix=prefix, key_sha256=digest)
    client = APIClient()
    client.credentials(HTTP_X_APP_KEY=key)
    return client


_PHONE = pytest.mark.parametrize("case", hostile.PHONE, ids=lambda case: case.id)
# The older polyglots (hostile.ACCEPTED, through the volunteer upload in test_hostile.py), as phone cases.
_POLYGLOTS = pytest.mark.parametrize(
    "case", [hostile.PhoneCase(c.id, c.content, shape="any", forbidden=c.forbidden) for c in hostile.ACCEPTED],
    ids=lambda case: case.id,
)


@_PHONE
def test_volunteer_upload_stores_clean_upright_copies(volunteer_api, challenge, case):
    _assert_case(_post_volunteer(volunteer_api, challenge, case.content), case)


@_PHONE
def test_app_feedback_stores_clean_upright_copies(app_client, project, case):
    _assert_case(_post_feedback(app_client, case.content), case)


@_PHONE
def test_label_example_is_stored_clean_and_upright(project, case):
    _assert_case(_post_label_example(project, case.content), case)


@_POLYGLOTS
def test_polyglots_through_feedback_and_label_example_keep_no_payload(app_client, project, case):
    _assert_case(_post_feedback(app_client, case.content), case)
    _assert_case(_post_label_example(project, case.content), case)


@functools.cache
def _big() -> hostile.PhoneCase:
    return hostile.PhoneCase("7071x7071", hostile.big_jpeg(), shape="any")


def _assert_big(copies: list[bytes]) -> None:
    _assert_case(copies, _big())
    assert Image.open(io.BytesIO(copies[0])).size == (2000, 2000)


def test_a_photo_just_under_the_pixel_limit_through_the_volunteer_upload(volunteer_api, challenge):
    _assert_big(_post_volunteer(volunteer_api, challenge, _big().content))


def test_a_photo_just_under_the_pixel_limit_through_app_feedback(app_client, project):
    _assert_big(_post_feedback(app_client, _big().content))


def test_a_photo_just_under_the_pixel_limit_as_a_label_example(project):
    copies = _post_label_example(project, _big().content)
    _assert_case(copies, _big())
    assert Image.open(io.BytesIO(copies[0])).size == (1280, 1280)


def test_the_corpus_plants_what_it_checks_for():
    """The metadata the tests look for is really in the uploads (a check that cannot pass vacuously)."""
    carriers = [c for c in hostile.PHONE if c.shape == "landscape" and c.id not in ("icc-srgb", "palette-transparency")]
    assert len(carriers) == 24 + 6
    for case in carriers:
        assert any(payload in case.content for payload in case.forbidden), case.id
    with Image.open(io.BytesIO(next(c for c in hostile.PHONE if c.id == "mpo-two-frames").content)) as mpo:
        assert mpo.format == "MPO" and mpo.n_frames == 2
    with Image.open(io.BytesIO(next(c for c in hostile.PHONE if c.id == "icc-srgb").content)) as icc:
        assert icc.info.get("icc_profile")


def test_an_rgb_colour_profile_is_converted_to_srgb_not_just_dropped(volunteer_api, challenge, project):
    """Red in a file whose profile says "red means sRGB's green" is stored green (and vice versa)."""
    content = hostile.with_icc(hostile.swapped_primaries_profile())
    for copies in (_post_volunteer(volunteer_api, challenge, content), _post_label_example(project, content)):
        for data in copies:
            image = _assert_clean(data, forbidden=())
            top_left = image.getpixel((image.width // 4, image.height // 4))  # red in the file
            top_right = image.getpixel((3 * image.width // 4, image.height // 4))  # green in the file
            assert top_left[1] > 150 and top_left[0] < 100, top_left
            assert top_right[0] > 150 and top_right[1] < 100, top_right
