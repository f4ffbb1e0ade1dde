"""Helpers: photos go through the real upload and moderation services (and so the scoring hook)."""
from __future__ import annotations

import datetime as dt
import io
import itertools
import random

import pytest
from PIL import Image

_colors = itertools.count(1)


def _distinct_jpeg(seed: int) -> bytes:
    """Random pixels: distinct bytes and distinct perceptual hashes (no near-duplicate flag)."""
    image = Image.frombytes("RGB", (32, 32), random.Random(seed).randbytes(32 * 32 * 3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def send_photo():
    """send_photo(volunteer, project, label=..., challenge=..., sent_at=...) -> a pending Photo."""
    from submissions.models import Photo
    from submissions.services import photo_create

    def send(volunteer, project, *, label="ants", challenge=None, sent_at: dt.datetime | None = None):
        data = _distinct_jpeg(next(_colors))
        photo = photo_create(
            project=project, challenge=challenge, label_name=label, upload=io.BytesIO(data), size=len(data),
            volunteer=volunteer,
        )
        if sent_at is not None:
            Photo.objects.filter(pk=photo.pk).update(created_at=sent_at)
            photo.refresh_from_db()
        return photo

    return send


@pytest.fixture
def approve(staff):
    from submissions.services import photo_moderate

    def run(photo):
        return photo_moderate(photo=photo, moderator=staff, approve=True)

    return run


@pytest.fixture
def reject(staff):
    from submissions.services import photo_moderate

    def run(photo, reason="Not an ant"):
        return photo_moderate(photo=photo, moderator=staff, approve=False, reason=reason)

    return run

