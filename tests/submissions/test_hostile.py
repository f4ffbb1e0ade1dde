"""The hostile-file corpus (hostile.py) through the real upload API.

Refusals: the right status and code, no row, nothing in storage. Acceptances: every
stored copy (image, display, thumbnail) is a clean JPEG (the private training copy of a small
or lossless source: a clean PNG) without the hostile payload.
"""
import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from submissions.models import Photo
from tests.submissions import hostile


def _post(client, challenge, case: hostile.Case):
    upload = io.BytesIO(case.content)
    upload.name = case.name
    return client.post(
        "/api/v1/photos/", {"challenge": challenge.pk, "label": "ants", "image": upload}, format="multipart",
        HTTP_CONTENT_TYPE=None,
    )


def _stored_copies(photo: Photo) -> dict[str, bytes]:
    copies = {}
    for field in ("image", "display_image", "thumbnail"):
        with default_storage.open(getattr(photo, field).name) as fh:
            copies[field] = fh.read()
    return copies


@pytest.mark.parametrize("case", hostile.REFUSED, ids=lambda case: case.id)
@pytest.mark.django_db
def test_hostile_upload_is_refused_and_nothing_is_kept(volunteer_api, challenge, media_files, case):
    response = _post(volunteer_api, challenge, case)

    assert response.status_code == case.status, response.content
    error = response.json()["error"]
    assert error["code"] == case.code and error["message"]
    assert Photo.objects.count() == 0
    assert media_files() == []


@pytest.mark.parametrize("case", hostile.ACCEPTED, ids=lambda case: case.id)
def test_awkward_upload_is_accepted_and_every_copy_is_clean(volunteer_api, challenge, media_files, case):
    response = _post(volunteer_api, challenge, case)

    assert response.status_code == 201, response.json()
    photo = Photo.objects.get()
    copies = _stored_copies(photo)
    assert len(media_files()) == 3
    for field, data in copies.items():
        image = Image.open(io.BytesIO(data))
        assert image.format in (("JPEG", "PNG") if field == "image" else ("JPEG",)) and image.mode == "RGB", field
        assert not image.getexif() and "comment" not in image.info and "icc_profile" not in image.info, field
        if image.format == "PNG":
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), field
            assert not image.text and "exif" not in image.info, field  # no tEXt/iTXt/zTXt, no eXIf
        else:
            assert data.startswith(b"\xff\xd8") and data.rstrip(b"\0").endswith(b"\xff\xd9"), field
        for payload in case.forbidden:
            assert payload not in data, (field, payload)


def test_wrong_extension_is_ignored_the_bytes_decide(volunteer_api, challenge):
    case = next(case for case in hostile.ACCEPTED if case.id == "png-named-jpg")
    assert _post(volunteer_api, challenge, case).status_code == 201
    assert Photo.objects.get().source_format == "PNG"


def _stored_image(photo: Photo) -> Image.Image:
    with default_storage.open(photo.image.name) as fh:
        return Image.open(io.BytesIO(fh.read())).convert("RGB")


def test_cmyk_jpeg_is_stored_as_rgb_with_the_right_colours(volunteer_api, challenge):
    case = next(case for case in hostile.ACCEPTED if case.id == "cmyk-jpeg")
    assert _post(volunteer_api, challenge, case).status_code == 201
    image = _stored_image(Photo.objects.get())
    cyan, yellow = image.getpixel((10, 16)), image.getpixel((54, 16))
    assert cyan[0] < 60 and cyan[1] > 200 and cyan[2] > 200, cyan
    assert yellow[0] > 200 and yellow[1] > 200 and yellow[2] < 60, yellow


@pytest.mark.parametrize("case_id", ["png-16bit-grey", "png-16bit-rgb"])
def test_16_bit_png_becomes_a_sensible_8_bit_image(volunteer_api, challenge, case_id):
    case = next(case for case in hostile.ACCEPTED if case.id == case_id)
    assert _post(volunteer_api, challenge, case).status_code == 201
    image = _stored_image(Photo.objects.get())
    low, high = image.convert("L").getextrema()
    assert high < 250, "not all white"
    assert low > 40, "not crushed to black"
    if case_id == "png-16bit-grey":
        # 50000/65535 and 30000/65535 of full scale: about 195 and 117 of 255.
        left, right = image.getpixel((4, 12))[0], image.getpixel((28, 12))[0]
        assert abs(left - 195) < 8 and abs(right - 117) < 8, (left, right)


def test_gps_is_gone_from_every_stored_copy(volunteer_api, challenge):
    case = next(case for case in hostile.ACCEPTED if case.id == "exif-gps")
    assert b"Exif" in case.content  # the corpus really carries EXIF
    assert _post(volunteer_api, challenge, case).status_code == 201
    photo = Photo.objects.get()
    for field, data in _stored_copies(photo).items():
        image = Image.open(io.BytesIO(data))
        assert not image.getexif().get_ifd(0x8825), field
        assert b"Exif" not in data and b"SecretCam" not in data, field


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken EXIF tags
def test_corrupted_files_only_ever_raise_domain_errors():
    """A small deterministic fuzz of the pipeline itself: refusals are DomainErrors, never a
    stray decoder exception (which the API would turn into a 500)."""
    from common.errors import DomainError
    from common.images import image_sanitize

    for data in hostile.mutated(seed=1, count=1000):
        try:
            image_sanitize(upload=io.BytesIO(data), size=len(data), max_bytes=10**7, max_pixels=50_000_000)
        except DomainError:
            pass
