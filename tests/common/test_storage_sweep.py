"""The orphan sweep on local storage: what it deletes, what it keeps, what it reports."""
import io
import os
import time
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from common.storage_sweep import storage_sweep
from common.tasks import storage_sweep_daily
from submissions.models import Photo
from submissions.services import photo_create
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db


def _stored(name: str, *, age_seconds: float = 0) -> str:
    saved = default_storage.save(name, ContentFile(b"left behind"))
    if age_seconds:
        then = time.time() - age_seconds
        os.utime(default_storage.path(saved), (then, then))
    return saved


@pytest.fixture
def photo(project, volunteer):
    data = jpeg_bytes(size=(80, 60))
    return photo_create(project=project, label_name="bees", upload=io.BytesIO(data), size=len(data), volunteer=volunteer)


@pytest.fixture
def leftovers(photo):
    """What a killed upload and a killed publish leave, old and young, and a file no row ever owns."""
    return {
        "old_photo": _stored(f"photos/ants-bees/{uuid.uuid4().hex}.jpg", age_seconds=7200),
        "old_thumb": _stored(f"photos/ants-bees/thumbs/{uuid.uuid4().hex}.jpg", age_seconds=7200),
        "old_model": _stored("models/ants-bees/v9/ants-bees-v9-fp32.onnx", age_seconds=7200),
        "young_photo": _stored(f"photos/ants-bees/{uuid.uuid4().hex}.jpg", age_seconds=60),
        "manifest": _stored("manifests/ants-bees/stable.json", age_seconds=7200),
    }


def _photo_names(photo: Photo) -> list[str]:
    return [photo.image.name, photo.display_image.name, photo.thumbnail.name]


def test_old_orphans_go_young_and_referenced_objects_stay(settings, photo, leftovers):
    settings.PLATFORM_ORPHAN_GRACE_SECONDS = 3600

    result = storage_sweep()

    old = {leftovers["old_photo"], leftovers["old_thumb"], leftovers["old_model"]}
    assert set(result.orphans) == old and result.deleted == 3 and result.delete_failed == 0
    assert not any(default_storage.exists(name) for name in old)
    assert result.kept_young == 1 and default_storage.exists(leftovers["young_photo"])
    assert all(default_storage.exists(name) for name in _photo_names(photo))
    assert default_storage.exists(leftovers["manifest"])  # outside the folders rows own
    assert result.missing == [] and result.listed == 3 + 3 + 1


def test_dry_run_deletes_nothing(photo, leftovers):
    result = storage_sweep(grace_seconds=3600, dry_run=True)

    assert len(result.orphans) == 3 and result.deleted == 0
    assert all(default_storage.exists(name) for name in leftovers.values())


def test_grace_zero_takes_every_unreferenced_object(photo, leftovers):
    result = storage_sweep(grace_seconds=0)

    assert leftovers["young_photo"] in result.orphans and result.deleted == 4
    assert all(default_storage.exists(name) for name in _photo_names(photo))


def test_rows_with_missing_objects_are_reported_and_kept(photo):
    default_storage.delete(photo.thumbnail.name)

    result = storage_sweep(grace_seconds=0)

    assert result.missing == [photo.thumbnail.name] and result.orphans == []
    assert Photo.objects.filter(pk=photo.pk).exists()


def test_command_and_daily_task(settings, photo, leftovers):
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["storage-sweep"]
    assert entry["task"] == storage_sweep_daily.name and entry["task"] in app.tasks
    assert entry["task"] not in settings.CELERY_TASK_ROUTES  # the default queue: light

    out = io.StringIO()
    call_command("storage_sweep", "--dry-run", "--grace-seconds", "3600", stdout=out)
    assert f"orphan (would delete): {leftovers['old_photo']}" in out.getvalue()
    assert default_storage.exists(leftovers["old_photo"])

    counts = storage_sweep_daily.delay().get()

    assert counts["deleted"] == 3 and counts["missing"] == 0
    assert not default_storage.exists(leftovers["old_photo"])
