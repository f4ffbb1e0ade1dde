"""Misprediction feedback: an app's photo enters moderation as its contribution, and only approved counts."""
from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from submissions.models import Photo
from submissions.services import photo_moderate
from tests.conftest import jpeg_bytes
from training.snapshots import dataset_snapshot_create

pytestmark = pytest.mark.django_db

URL = "/api/mobile/v1/models/ants-bees/feedback"
INSTALL = "install-0001"


def _form(photo: bytes | None = None, **fields) -> dict:
    form = {"install_id": INSTALL, "predicted_label": "ants", "label": "bees", **fields}
    if photo is not None:
        upload = io.BytesIO(photo)
        upload.name = "shot.jpg"
        form["photo"] = upload
    return {key: value for key, value in form.items() if value is not None}


def _post(client, photo: bytes | None = None, **fields):
    return client.post(URL, _form(photo, **fields), format="multipart")


def _jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (40, 30), (20, 160, 40))
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, comment=b"home address")
    return out.getvalue()


def _error(response) -> dict:
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


def test_feedback_becomes_a_pending_app_contribution_without_metadata(app_api, app_key, project, make_version):
    make_version(project, 3)

    response = _post(app_api, _jpeg_with_gps(), version=3)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending"
    photo = Photo.objects.get(public_id=body["id"])
    assert photo.source == Photo.Source.APP and photo.volunteer is None and photo.challenge is None
    assert photo.label.name == "bees" and photo.predicted_label == "ants" and photo.model_version == 3
    assert photo.app_key_id == app_key[0].pk and photo.app_name == "Test app"
    with default_storage.open(photo.image.name) as fh:
        stored = fh.read()
    assert b"home address" not in stored and b"Exif" not in stored
    assert not Image.open(io.BytesIO(stored)).getexif()


def test_version_is_optional(app_api, project):
    response = _post(app_api, jpeg_bytes())
    assert response.status_code == 201
    assert Photo.objects.get(public_id=response.json()["id"]).model_version is None


def test_it_shows_in_the_moderation_queue_marked_as_app_feedback(app_api, project, staff_api, admin_client):
    _post(app_api, jpeg_bytes())

    queue = staff_api.get("/api/v1/moderation/photos/", {"source": "app"}).json()
    rows = queue["results"] if isinstance(queue, dict) else queue
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "pending" and row["source"] == "app" and row["volunteer"] is None
    assert row["app"] == "Test app" and row["predicted_label"] == "ants" and row["label"] == "bees"

    page = admin_client.get("/admin/submissions/photo/")
    assert page.status_code == 200 and b"App feedback: Test app" in page.content


def test_it_counts_for_training_only_once_approved(app_api, project, staff):
    photo = Photo.objects.get(public_id=_post(app_api, jpeg_bytes()).json()["id"])

    pending = dataset_snapshot_create(project=project)
    assert str(photo.public_id) not in {entry["photo"] for entry in pending.manifest["photos"]}

    # No volunteer: approval must not trip over leaderboard scoring.
    photo_moderate(photo=photo, moderator=staff, approve=True)
    approved = dataset_snapshot_create(project=project)
    assert [entry["label"] for entry in approved.manifest["photos"] if entry["photo"] == str(photo.public_id)] == [
        "bees"
    ]


def test_a_rejected_app_photo_scores_nobody(app_api, project, staff):
    photo = Photo.objects.get(public_id=_post(app_api, jpeg_bytes()).json()["id"])
    photo_moderate(photo=photo, moderator=staff, approve=False, reason="blurry")
    photo.refresh_from_db()
    assert photo.status == Photo.Status.REJECTED


def test_missing_or_bad_app_key_is_401(api, project):
    assert _error(_post(api, jpeg_bytes()))["code"] == "app_key_invalid"
    api.credentials(HTTP_X_APP_KEY="mk_nope_nope")
    response = _post(api, jpeg_bytes())
    assert response.status_code == 401 and _error(response)["code"] == "app_key_invalid"


def test_unknown_model_is_404(app_api, project):
    response = app_api.post(
        "/api/mobile/v1/models/wasps/feedback", _form(jpeg_bytes()), format="multipart"
    )
    assert response.status_code == 404 and _error(response)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"label": "wasps"}, "label"),
        ({"label": None}, "label"),
        ({"predicted_label": None}, "predicted_label"),
        ({"predicted_label": "not a slug!"}, "predicted_label"),
        ({"install_id": None}, "install_id"),
        ({"install_id": "short"}, "install_id"),
        ({"install_id": "install-0001\n"}, "install_id"),
        ({"label": "bees\n"}, "label"),
        ({"version": "seven"}, "version"),
        ({"version": 0}, "version"),
    ],
)
def test_bad_fields_are_400_naming_the_field(app_api, project, fields, bad_field):
    response = _post(app_api, jpeg_bytes(), **fields)
    assert response.status_code == 400
    assert bad_field in _error(response)["fields"]
    assert not Photo.objects.exists()


def test_missing_photo_is_400(app_api, project):
    response = _post(app_api)
    assert response.status_code == 400 and "photo" in _error(response)["fields"]


def test_unknown_version_or_a_prediction_it_cannot_make_is_400(app_api, project, make_version):
    make_version(project, 1)
    response = _post(app_api, jpeg_bytes(), version=9)
    assert response.status_code == 400 and _error(response)["code"] == "unknown_version"
    assert "version" in _error(response)["fields"]

    response = _post(app_api, jpeg_bytes(), version=1, predicted_label="wasps")
    assert response.status_code == 400 and "predicted_label" in _error(response)["fields"]


def test_oversized_photo_is_413(app_api, project, settings, media_files):
    settings.PLATFORM_FEEDBACK_MAX_BYTES = 1000
    response = _post(app_api, jpeg_bytes(size=(400, 400)) + b"\0" * 2000)
    assert response.status_code == 413 and _error(response)["code"] == "file_too_large"
    assert media_files() == []


def test_an_oversized_body_is_refused_from_its_content_length(app_api, project, settings):
    settings.PLATFORM_FEEDBACK_MAX_BYTES = 1000
    response = _post(app_api, b"\xff" * 200_000)
    assert response.status_code == 413 and _error(response)["code"] == "file_too_large"


def test_a_text_file_is_415(app_api, project, media_files):
    response = _post(app_api, b"just some text, not a picture\n" * 10)
    assert response.status_code == 415 and _error(response)["code"] == "not_an_image"
    assert media_files() == [] and not Photo.objects.exists()


def test_an_empty_file_is_400(app_api, project):
    response = _post(app_api, b"")
    assert response.status_code == 400


def test_the_same_photo_twice_is_409_with_the_first_id(app_api, project):
    photo = jpeg_bytes()
    first = _post(app_api, photo)
    again = _post(app_api, photo)
    assert again.status_code == 409 and _error(again)["original_id"] == first.json()["id"]


def test_floods_are_rate_limited_per_key_and_install(app_api, app_key, project):
    key = app_key[0]
    key.rate_limit_per_minute = 2
    key.save()
    statuses = [_post(app_api, jpeg_bytes(color=(i * 40, 0, 0))).status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    # Another install under the same key has its own allowance.
    assert _post(app_api, jpeg_bytes(color=(0, 0, 250)), install_id="install-0002").status_code == 201
