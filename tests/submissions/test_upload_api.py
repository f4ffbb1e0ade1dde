"""Uploading a photo for today's challenge, and every way it can be refused."""
import io
import struct
import zlib

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from submissions.models import Photo
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db


def _post(client, challenge, content: bytes, *, name="photo.jpg", label="ants", content_type="image/jpeg"):
    upload = io.BytesIO(content)
    upload.name = name
    return client.post(
        "/api/v1/photos/", {"challenge": challenge.pk, "label": label, "image": upload}, format="multipart"
    )


def _jpeg_with_gps_and_orientation() -> bytes:
    """A 60x30 JPEG, left half red, rotated by EXIF (orientation 6), with GPS and a comment."""
    image = Image.new("RGB", (60, 30), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, comment=b"secret location notes")
    return out.getvalue()


def test_upload_is_reencoded_oriented_and_stripped_of_metadata(volunteer_api, challenge, volunteer):
    response = _post(volunteer_api, challenge, _jpeg_with_gps_and_orientation())

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending" and body["label"] == "ants"
    photo = Photo.objects.get(public_id=body["id"])
    assert photo.volunteer == volunteer and photo.challenge == challenge
    with default_storage.open(photo.image.name) as fh:
        stored = fh.read()
    assert b"secret location" not in stored and b"Exif" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "PNG"  # a small photo's training copy is lossless
    assert photo.image.name.endswith(".png") and not image.text
    assert image.size == (30, 60)  # the EXIF rotation was applied to the pixels
    assert not image.getexif() and "comment" not in image.info and "icc_profile" not in image.info
    # Rotated clockwise, the red left half is now the top half.
    top, bottom = image.getpixel((15, 10)), image.getpixel((15, 50))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200
    assert photo.image.name.startswith("photos/ants-bees/") and "photo.jpg" not in photo.image.name


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "HEIF"])
def test_other_accepted_formats_are_stored_as_png_and_jpeg(volunteer_api, challenge, fmt):
    out = io.BytesIO()
    Image.new("RGBA" if fmt == "PNG" else "RGB", (40, 40), (10, 200, 10)).save(out, format=fmt)
    response = _post(volunteer_api, challenge, out.getvalue(), name=f"x.{fmt.lower()}")
    assert response.status_code == 201, response.json()
    photo = Photo.objects.get()
    assert photo.source_format == fmt
    # Small: a lossless training copy; people see JPEG copies.
    assert photo.image.name.endswith(".png") and photo.display_image.name.endswith(".jpg")


def _truncated_jpeg() -> bytes:
    data = jpeg_bytes(size=(400, 300), color=(120, 80, 40), quality=95)
    return data[: len(data) // 2]


def _bomb_png(width=60_000, height=60_000) -> bytes:
    """A tiny PNG whose header claims a huge picture (a decompression bomb)."""
    out = io.BytesIO()
    Image.new("1", (1, 1)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR chunk's CRC
    return bytes(data)


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"%PDF-1.4 not an image at all", 415, "not_an_image"),
        (_truncated_jpeg(), 400, "corrupt_image"),
        (b"", 400, "empty_file"),
        (_bomb_png(), 413, "too_many_pixels"),
        (_bomb_png(10_000, 10_000), 413, "too_many_pixels"),
    ],
    ids=["non-image", "truncated-jpeg", "zero-byte", "decompression-bomb", "bomb-under-pillow-2x-limit"],
)
def test_bad_upload_gets_a_json_error_and_stores_nothing(volunteer_api, challenge, media_files, content, status, code):
    response = _post(volunteer_api, challenge, content)

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert Photo.objects.count() == 0
    assert media_files() == []


def test_file_over_the_size_limit_is_refused(volunteer_api, challenge, media_files, settings):
    settings.PLATFORM_UPLOAD_MAX_BYTES = 1000
    response = _post(volunteer_api, challenge, jpeg_bytes(size=(300, 300), color=(1, 2, 3), quality=100) + b"\0" * 2000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert Photo.objects.count() == 0 and media_files() == []


def test_unknown_label_and_missing_fields_are_400(volunteer_api, challenge):
    response = _post(volunteer_api, challenge, jpeg_bytes(), label="wasps")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_label"
    response = volunteer_api.post("/api/v1/photos/", {"challenge": challenge.pk}, format="multipart")
    assert response.status_code == 400 and "image" in response.json()["error"]["fields"]


def test_exact_duplicate_is_refused_with_the_original_id(volunteer_api, challenge):
    first = _post(volunteer_api, challenge, jpeg_bytes())
    second = _post(volunteer_api, challenge, jpeg_bytes())
    assert second.status_code == 409
    assert second.json()["error"] == {
        "code": "duplicate_photo", "message": "This exact photo was already sent.", "original_id": first.json()["id"]
    }


def test_anonymous_upload_is_401(api, challenge):
    response = _post(api, challenge, jpeg_bytes())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_volunteers_list_only_their_own_photos(volunteer_api, challenge):
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    mine = _post(volunteer_api, challenge, jpeg_bytes(color=(1, 1, 1))).json()["id"]
    other = APIClient()
    other.force_authenticate(UserFactory())
    _post(other, challenge, jpeg_bytes(color=(250, 250, 250)))

    listed = volunteer_api.get("/api/v1/photos/").json()
    assert [photo["id"] for photo in listed["results"]] == [mine]


def test_storage_failure_is_503_and_leaves_no_row(volunteer_api, challenge, settings, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the media folder should be")
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocked)}}}
    response = _post(volunteer_api, challenge, jpeg_bytes())
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert Photo.objects.count() == 0
