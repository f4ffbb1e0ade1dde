"""Fixtures for moderation tests: photo rows made directly (stored JPEG + row), fast."""
from __future__ import annotations

import hashlib
import itertools

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from submissions.models import Photo, photo_upload_to
from tests.conftest import jpeg_bytes

_counter = itertools.count()


def make_photo(*, project, label: str = "ants", volunteer=None, status=Photo.Status.PENDING, color=(200, 30, 30),
               **fields) -> Photo:
    """A stored photo row as the upload pipeline leaves it (without going through it)."""
    data = jpeg_bytes(size=(48, 40), color=color, comment=str(next(_counter)).encode())
    digest = hashlib.sha256(data).hexdigest()
    photo = Photo(
        project=project, label=project.labels.get(name=label), volunteer=volunteer, status=status,
        width=48, height=40, source_format="jpeg", upload_sha256=digest, sha256=digest, phash="0" * 16, **fields,
    )
    photo.image.name = default_storage.save(photo_upload_to(photo, ""), ContentFile(data))
    photo.save()
    return photo



@pytest.fixture
def photo_factory(project, volunteer):
    def factory(**kwargs):
        kwargs.setdefault("volunteer", volunteer)
        return make_photo(project=project, **kwargs)

    return factory
