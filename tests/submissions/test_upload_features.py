"""Display copies and thumbnails, near duplicates, idempotent retries, rate limits and
quotas, volunteers deleting pending photos, and who may see which copy."""
import datetime as dt
import io
from urllib.parse import urlsplit

import pytest
from django.core.files.storage import FileSystemStorage, default_storage
from PIL import Image
from rest_framework.test import APIClient

from submissions import services
from submissions.models import Photo, UploadIdempotencyKey
from tests.conftest import jpeg_bytes
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _post(client, challenge, content: bytes, *, label="ants", key: str | None = None):
    upload = io.BytesIO(content)
    upload.name = "photo.jpg"
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(
        "/api/v1/photos/", {"challenge": challenge.pk, "label": label, "image": upload}, format="multipart", **headers
    )


def _scene(size=(3000, 2000), shift=0, seed=0) -> Image.Image:
    """A structured picture (so perceptual hashes mean something); `seed` changes the scene."""
    image = Image.linear_gradient("L").rotate(90 * seed).resize(size).convert("RGB")
    w, h = size
    image.paste((220, 30, 30), (w // 5 + shift, h // 4, w // 2 + shift, h // 2))
    image.paste((30, 30, 220), ((w * 3) // 5, (h * 3) // 5, (w * 4) // 5, (h * 9) // 10))
    return image


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **kwargs)
    return out.getvalue()


def _read(name: str) -> bytes:
    with default_storage.open(name) as fh:
        return fh.read()


# --- copies ---------------------------------------------------------------------------------


def test_upload_stores_display_copy_and_thumbnail_once(volunteer_api, challenge, media_files):
    response = _post(volunteer_api, challenge, _jpeg(_scene(), quality=80))
    assert response.status_code == 201, response.json()
    body = response.json()
    photo = Photo.objects.get()
    sizes = {}
    for field in ("image", "display_image", "thumbnail"):
        image = Image.open(io.BytesIO(_read(getattr(photo, field).name)))
        sizes[field] = image.size
    assert sizes == {"image": (2000, 1333), "display_image": (1280, 853), "thumbnail": (320, 213)}
    assert photo.display_image.name.startswith("photos/ants-bees/display/")
    assert photo.thumbnail.name.startswith("photos/ants-bees/thumbs/")
    assert len(media_files()) == 3
    assert body["featured"] is False and body["near_duplicate"] is False
    assert urlsplit(body["display_url"]).path == f"/photos/{photo.public_id}/display"
    assert urlsplit(body["thumbnail_url"]).path == f"/photos/{photo.public_id}/thumbnail"


@pytest.mark.parametrize("fail_at", [1, 2, 3, "row"])
def test_any_failed_save_leaves_no_object_and_no_row(volunteer_api, challenge, media_files, monkeypatch, fail_at):
    """Whichever save fails (any of the three copies, or the row), nothing remains."""
    calls = {"n": 0}
    real_save = FileSystemStorage.save

    def flaky_save(self, name, content, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError("disk full")
        return real_save(self, name, content, *args, **kwargs)

    monkeypatch.setattr(FileSystemStorage, "save", flaky_save)
    if fail_at == "row":
        def broken_save(self, *args, **kwargs):
            raise RuntimeError("database went away")
        monkeypatch.setattr(Photo, "save", broken_save)
        with pytest.raises(RuntimeError):
            _post(volunteer_api, challenge, jpeg_bytes())
    else:
        response = _post(volunteer_api, challenge, jpeg_bytes())
        assert response.status_code == 503 and response.json()["error"]["code"] == "storage_unavailable"
    assert Photo.objects.count() == 0
    assert media_files() == []


# --- near duplicates ------------------------------------------------------------------------


def test_near_duplicate_is_accepted_but_flagged(volunteer_api, challenge):
    first = _post(volunteer_api, challenge, _jpeg(_scene((800, 600)), quality=90))
    # The same scene re-encoded smaller with another quality: other bytes, same picture.
    again = _post(volunteer_api, challenge, _jpeg(_scene((640, 480)), quality=60))
    different = _post(volunteer_api, challenge, _jpeg(_scene((800, 600), seed=1), quality=90))

    assert again.status_code == 201 and again.json()["near_duplicate"] is True
    assert Photo.objects.get(public_id=again.json()["id"]).near_duplicate_of.public_id.hex == first.json()["id"].replace("-", "")
    assert different.status_code == 201 and different.json()["near_duplicate"] is False
    assert first.json()["near_duplicate"] is False


def test_near_duplicate_threshold_is_a_setting(volunteer_api, challenge, settings):
    settings.PLATFORM_NEAR_DUPLICATE_DISTANCE = -1  # disabled
    _post(volunteer_api, challenge, _jpeg(_scene((800, 600)), quality=90))
    again = _post(volunteer_api, challenge, _jpeg(_scene((640, 480)), quality=60))
    assert again.json()["near_duplicate"] is False


def test_rejected_photo_does_not_make_a_retake_a_near_duplicate(volunteer_api, challenge):
    first = _post(volunteer_api, challenge, _jpeg(_scene((800, 600)), quality=90))
    Photo.objects.filter(public_id=first.json()["id"]).update(status=Photo.Status.REJECTED, reject_reason="Blurry")
    retake = _post(volunteer_api, challenge, _jpeg(_scene((640, 480)), quality=60))
    assert retake.json()["near_duplicate"] is False


# --- idempotency ----------------------------------------------------------------------------


def test_retry_with_the_same_key_replays_the_first_result(volunteer_api, challenge, media_files):
    data = jpeg_bytes()
    first = _post(volunteer_api, challenge, data, key="upload-1")
    retry = _post(volunteer_api, challenge, data, key="upload-1")

    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    # The same photo; its signed URLs are signed afresh (they expire), so a second may separate them.
    assert _unsigned(retry.json()) == _unsigned(first.json())
    assert all("?sig=" in retry.json()[field] for field in ("display_url", "thumbnail_url"))
    assert Photo.objects.count() == 1 and len(media_files()) == 3


def _unsigned(body: dict) -> dict:
    """``body`` with the signature dropped from each signed URL."""
    return {k: v.split("?sig=")[0] if k.endswith("_url") and isinstance(v, str) else v for k, v in body.items()}


def test_same_key_with_another_file_is_refused(volunteer_api, challenge):
    first = _post(volunteer_api, challenge, jpeg_bytes(color=(1, 2, 3)), key="upload-1")
    other = _post(volunteer_api, challenge, jpeg_bytes(color=(200, 2, 3)), key="upload-1")
    other_label = _post(volunteer_api, challenge, jpeg_bytes(color=(1, 2, 3)), key="upload-1", label="bees")

    for response in (other, other_label):
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused" and error["original_id"] == first.json()["id"]
    assert Photo.objects.count() == 1


def test_keys_belong_to_one_volunteer(volunteer_api, challenge):
    assert _post(volunteer_api, challenge, jpeg_bytes(color=(1, 2, 3)), key="k").status_code == 201
    other = APIClient()
    other.force_authenticate(UserFactory())
    response = _post(other, challenge, jpeg_bytes(color=(9, 9, 9)), key="k")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response


def test_invalid_key_is_400(volunteer_api, challenge):
    response = _post(volunteer_api, challenge, jpeg_bytes(), key="x" * 101)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_idempotency_key"
    assert Photo.objects.count() == 0


@pytest.mark.parametrize("same_file", [True, False])
def test_key_race_is_settled_by_the_unique_constraint(volunteer_api, challenge, volunteer, media_files, monkeypatch, same_file):
    """Two requests with one key, both past the first look-up: the loser replays or is refused."""
    data = jpeg_bytes(color=(1, 2, 3))
    winner = _post(volunteer_api, challenge, data, key="race")
    real_replay = services._idempotent_replay
    looked = {"n": 0}

    def first_lookup_misses(**kwargs):
        looked["n"] += 1
        return None if looked["n"] == 1 else real_replay(**kwargs)

    monkeypatch.setattr(services, "_idempotent_replay", first_lookup_misses)
    # Same bytes: the exact-duplicate pre-check would answer 409 before the insert; let the
    # loser reach the insert as it would if both had passed the check at the same moment.
    monkeypatch.setattr(services, "_refuse_exact_duplicate", lambda **kwargs: None)
    loser = _post(volunteer_api, challenge, data if same_file else jpeg_bytes(color=(250, 2, 3)), key="race")

    if same_file:
        assert loser.status_code == 201 and loser["Idempotent-Replayed"] == "true"
        assert loser.json()["id"] == winner.json()["id"]
    else:
        assert loser.status_code == 422 and loser.json()["error"]["code"] == "idempotency_key_reused"
    assert Photo.objects.count() == 1 and UploadIdempotencyKey.objects.count() == 1
    assert len(media_files()) == 3  # the loser's copies were removed


# --- rate limits and quotas ----------------------------------------------------------------


def test_burst_throttle_is_429_with_retry_after(volunteer_api, challenge, settings):
    settings.PLATFORM_UPLOAD_RATE = "2/min"
    for shade in (1, 2):
        assert _post(volunteer_api, challenge, jpeg_bytes(color=(shade, 0, 0))).status_code == 201
    response = _post(volunteer_api, challenge, jpeg_bytes(color=(3, 0, 0)))

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "throttled" and error["message"] and error["retry_after"] == int(response["Retry-After"])
    assert Photo.objects.count() == 2
    # Listing is not throttled, and another volunteer has their own budget.
    assert volunteer_api.get("/api/v1/photos/").status_code == 200
    other = APIClient()
    other.force_authenticate(UserFactory())
    assert _post(other, challenge, jpeg_bytes(color=(4, 0, 0))).status_code == 201


def test_daily_quota_is_429_until_the_projects_midnight(volunteer_api, challenge, settings, media_files):
    settings.PLATFORM_UPLOAD_DAILY_QUOTA = 2
    for shade in (1, 2):
        assert _post(volunteer_api, challenge, jpeg_bytes(color=(shade, 0, 0))).status_code == 201
    response = _post(volunteer_api, challenge, jpeg_bytes(color=(3, 0, 0)))

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "daily_quota_exceeded"
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 24 * 3600 and error["retry_after"] == retry_after
    assert Photo.objects.count() == 2 and len(media_files()) == 6


def test_yesterdays_photos_do_not_count_against_the_quota(volunteer_api, challenge, settings):
    settings.PLATFORM_UPLOAD_DAILY_QUOTA = 1
    assert _post(volunteer_api, challenge, jpeg_bytes(color=(1, 0, 0))).status_code == 201
    Photo.objects.update(created_at=Photo.objects.get().created_at - dt.timedelta(days=1))
    assert _post(volunteer_api, challenge, jpeg_bytes(color=(2, 0, 0))).status_code == 201


def test_a_replay_is_answered_even_when_the_quota_is_used_up(volunteer_api, challenge, settings):
    settings.PLATFORM_UPLOAD_DAILY_QUOTA = 1
    data = jpeg_bytes()
    assert _post(volunteer_api, challenge, data, key="once").status_code == 201
    retry = _post(volunteer_api, challenge, data, key="once")
    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"


# --- my photos, deleting, who sees which copy --------------------------------------------


def test_volunteer_sees_status_reason_and_flags(volunteer_api, challenge):
    sent = _post(volunteer_api, challenge, jpeg_bytes()).json()
    Photo.objects.filter(public_id=sent["id"]).update(status=Photo.Status.REJECTED, reject_reason="Not an ant")
    listed = volunteer_api.get("/api/v1/photos/").json()["results"][0]
    assert listed["status"] == "rejected" and listed["reject_reason"] == "Not an ant"
    assert {"featured", "near_duplicate", "display_url", "thumbnail_url"} <= listed.keys()
    assert volunteer_api.get(f"/api/v1/photos/{sent['id']}/").json()["reject_reason"] == "Not an ant"


def test_volunteer_deletes_own_pending_photo(volunteer_api, challenge, media_files, django_capture_on_commit_callbacks):
    sent = _post(volunteer_api, challenge, jpeg_bytes()).json()
    assert len(media_files()) == 3
    with django_capture_on_commit_callbacks(execute=True):
        response = volunteer_api.delete(f"/api/v1/photos/{sent['id']}/")
    assert response.status_code == 204
    assert Photo.objects.count() == 0 and media_files() == []


def test_deleting_someone_elses_photo_is_404(volunteer_api, challenge, media_files):
    sent = _post(volunteer_api, challenge, jpeg_bytes()).json()
    other = APIClient()
    other.force_authenticate(UserFactory())
    response = other.delete(f"/api/v1/photos/{sent['id']}/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Photo.objects.count() == 1 and len(media_files()) == 3


@pytest.mark.parametrize("decided", [Photo.Status.APPROVED, Photo.Status.REJECTED])
def test_moderated_photo_cannot_be_deleted(volunteer_api, challenge, media_files, decided):
    sent = _post(volunteer_api, challenge, jpeg_bytes()).json()
    Photo.objects.update(status=decided)
    response = volunteer_api.delete(f"/api/v1/photos/{sent['id']}/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_pending"
    assert Photo.objects.count() == 1 and len(media_files()) == 3


def test_copies_are_private_until_approved_and_featured(client, volunteer, staff, challenge):
    api = APIClient()
    api.force_authenticate(volunteer)
    sent = _post(api, challenge, jpeg_bytes()).json()
    photo = Photo.objects.get()
    urls = [f"/photos/{photo.public_id}/display", f"/photos/{photo.public_id}/thumbnail"]

    def status_for(user):
        client.logout()
        if user is not None:
            client.force_login(user)
        return [client.get(url).status_code for url in urls]

    stranger = UserFactory()
    assert status_for(volunteer) == [200, 200]
    assert status_for(staff) == [200, 200]
    assert status_for(stranger) == [404, 404]
    assert status_for(None) == [404, 404]

    Photo.objects.update(status=Photo.Status.APPROVED, featured=True)
    assert status_for(None) == [200, 200] and status_for(stranger) == [200, 200]
    # The full-size copy stays private even for a featured photo.
    client.force_login(stranger)
    assert client.get(f"/photos/{photo.public_id}/image").status_code == 404
    assert urlsplit(sent["thumbnail_url"]).path == urls[1]
    client.force_login(volunteer)
    thumb = b"".join(client.get(urls[1]).streaming_content)
    assert Image.open(io.BytesIO(thumb)).format == "JPEG"


def test_uploads_to_a_closed_challenge_are_refused_and_nothing_is_stored(volunteer_api, challenge, media_files):
    from challenges.selectors import project_today

    challenge.day = project_today(project=challenge.project) - dt.timedelta(days=1)
    challenge.save()
    response = _post(volunteer_api, challenge, jpeg_bytes())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "challenge_closed"
    assert challenge.day.isoformat() in error["message"]
    assert not Photo.objects.exists() and media_files() == []


def test_a_successful_upload_is_scored_and_checked_for_volume_after_commit(
    volunteer_api, challenge, django_capture_on_commit_callbacks, settings
):
    settings.PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR = 1
    with django_capture_on_commit_callbacks(execute=True):
        _post(volunteer_api, challenge, jpeg_bytes(color=(10, 200, 10)))
        second = _post(volunteer_api, challenge, _jpeg(_scene(size=(64, 48))))
    assert second.status_code == 201
    assert Photo.objects.get(public_id=second.json()["id"]).flag_suspicious_volume
