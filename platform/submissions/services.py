"""Writes for photos: the upload pipeline and moderation."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from challenges.models import Challenge, Label, Project
from common.errors import Conflict, DomainError, ServiceUnavailable, ValidationFailed
from common.images import SanitizedImage, image_sanitize
from leaderboards.services import score_photo_moderated
from submissions.models import Photo, photo_upload_to

logger = logging.getLogger(__name__)


def photo_create(
    *,
    project: Project,
    label_name: str,
    upload: BinaryIO,
    size: int,
    volunteer: AbstractBaseUser | None,
    challenge: Challenge | None = None,
    source: str = Photo.Source.VOLUNTEER,
    status: str = Photo.Status.PENDING,
) -> Photo:
    """Validate, sanitize and store one photo; return its new row.

    Either both the object in storage and its row exist afterwards, or neither does.
    """
    label = _label_for(project=project, challenge=challenge, label_name=label_name)
    sanitized = image_sanitize(
        upload=upload,
        size=size,
        max_bytes=settings.PLATFORM_UPLOAD_MAX_BYTES,
        max_pixels=settings.PLATFORM_UPLOAD_MAX_PIXELS,
    )
    _refuse_exact_duplicate(project=project, sanitized=sanitized)

    photo = Photo(
        project=project,
        label=label,
        challenge=challenge,
        volunteer=volunteer,
        source=source,
        status=status,
        width=sanitized.width,
        height=sanitized.height,
        source_format=sanitized.source_format,
        upload_sha256=sanitized.upload_sha256,
        sha256=sanitized.sha256,
        phash=sanitized.phash,
    )
    name = _storage_save(photo_upload_to(photo, ""), sanitized.content)
    photo.image.name = name
    try:
        with transaction.atomic():
            photo.save()
    except IntegrityError:
        default_storage.delete(name)
        # A concurrent upload of the same bytes won the race.
        _refuse_exact_duplicate(project=project, sanitized=sanitized)
        raise
    except BaseException:
        default_storage.delete(name)
        raise
    return photo


def photo_moderate(*, photo: Photo, moderator: AbstractBaseUser, approve: bool, reason: str = "") -> Photo:
    """Approve or reject a photo; a rejection needs a reason the volunteer will see."""
    if not approve and not reason.strip():
        raise ValidationFailed("A rejection needs a reason.", code="reason_required")
    previous_status = photo.status
    photo.status = Photo.Status.APPROVED if approve else Photo.Status.REJECTED
    photo.reject_reason = "" if approve else reason.strip()
    photo.moderated_by = moderator
    photo.moderated_at = timezone.now()
    with transaction.atomic():
        photo.save(update_fields=["status", "reject_reason", "moderated_by", "moderated_at", "updated_at"])
        score_photo_moderated(photo=photo, previous_status=previous_status)
    return photo


def _label_for(*, project: Project, challenge: Challenge | None, label_name: str) -> Label:
    labels = challenge.labels.all() if challenge is not None else project.labels.all()
    label = next((label for label in labels if label.name == label_name), None)
    if label is None:
        names = ", ".join(sorted(label.name for label in labels))
        raise ValidationFailed(f"Unknown label {label_name!r}; choose one of: {names}.", code="unknown_label")
    return label


def _refuse_exact_duplicate(*, project: Project, sanitized: SanitizedImage) -> None:
    original = Photo.objects.filter(project=project, upload_sha256=sanitized.upload_sha256).first()
    if original is not None:
        raise Conflict(
            "This exact photo was already sent.",
            code="duplicate_photo",
            extra={"original_id": str(original.public_id)},
        )


def _storage_save(name: str, content: bytes) -> str:
    """Save to the default storage; an unreachable storage is a 503, not a 500."""
    try:
        return default_storage.save(name, ContentFile(content))
    except Exception as exc:  # botocore and OSError alike: the storage is not answering
        logger.warning("storage save failed for %s: %s", name, exc)
        raise ServiceUnavailable(
            "Photo storage is unavailable; retry later.", code="storage_unavailable"
        ) from exc


def photo_import_folder(
    *, project: Project, folder: Path, moderator: AbstractBaseUser, progress: Callable[[Iterable], Iterable] = iter
) -> dict[str, int]:
    """Import `folder/<label>/*` as approved photos of the project (a seed data set).

    Each file goes through the same hostile-upload pipeline as a volunteer's photo.
    Files already imported (exact duplicates) and files that are not accepted images are
    counted and skipped, so the import can be re-run safely.
    """
    labels = {label.name: label for label in project.labels.all()}
    files = sorted(
        path for path in folder.glob("*/*") if path.is_file() and path.parent.name in labels
    )
    counts = {"imported": 0, "duplicate": 0, "refused": 0}
    for path in progress(files):
        try:
            with path.open("rb") as fh:
                photo = photo_create(
                    project=project,
                    label_name=path.parent.name,
                    upload=fh,
                    size=path.stat().st_size,
                    volunteer=None,
                    source=Photo.Source.IMPORT,
                )
        except Conflict:
            counts["duplicate"] += 1
            continue
        except DomainError as exc:
            logger.info("not imported: %s: %s", path, exc.message)
            counts["refused"] += 1
            continue
        photo_moderate(photo=photo, moderator=moderator, approve=True)
        counts["imported"] += 1
    return counts
