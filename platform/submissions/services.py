"""Writes for photos: the upload pipeline (volunteers, imports, app feedback) and moderation."""
from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from challenges.models import Challenge, Label, Project
from challenges.selectors import project_today
from challenges.services import challenge_assert_open
from common.errors import (
    Conflict,
    DomainError,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    UnprocessableEntity,
    ValidationFailed,
)
from common.images import SanitizedImage, image_sanitize, upload_digest
from leaderboards.services import score_photo_moderated
from submissions.models import (
    Photo,
    UploadIdempotencyKey,
    photo_display_to,
    photo_thumbnail_to,
    photo_upload_to,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoUpload:
    """The outcome of an upload: the photo, and whether it is an earlier result replayed."""

    photo: Photo
    replayed: bool = False


@dataclass(frozen=True)
class AppFeedback:
    """Who sent a misprediction photo from an app, and what the app's model had said."""

    app_key_id: int
    app_name: str
    predicted_label: str
    model_version: int | None = None


@dataclass(frozen=True)
class ImportedPhoto:
    """A photo of another instance's data set export: it keeps its id, its bytes and its split."""

    public_id: uuid.UUID
    split_key: str


@dataclass(frozen=True)
class NewPhoto:
    """A photo as it arrives: its bytes, where it goes, who sent it and in what role.

    ``max_bytes`` overrides PLATFORM_UPLOAD_MAX_BYTES (app feedback has its own limit);
    ``app`` records which app sent the photo and what its model predicted; ``imported`` keeps a
    data set export's photo as it was (its public id, split key and exact bytes).
    """

    project: Project
    label_name: str
    upload: BinaryIO
    size: int
    volunteer: AbstractBaseUser | None = None
    challenge: Challenge | None = None
    source: str = Photo.Source.VOLUNTEER
    status: str = Photo.Status.PENDING
    max_bytes: int | None = None
    app: AppFeedback | None = None
    imported: ImportedPhoto | None = None

    @property
    def from_volunteer(self) -> bool:
        """A volunteer's own photo: challenge window, daily quota and follow-ups apply."""
        return self.volunteer is not None and self.source == Photo.Source.VOLUNTEER


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
    """Validate, sanitize and store one photo; return its new row (see photo_upload)."""
    return photo_upload(
        new=NewPhoto(project=project, label_name=label_name, upload=upload, size=size, volunteer=volunteer,
                     challenge=challenge, source=source, status=status),
    ).photo


def photo_upload(*, new: NewPhoto, idempotency_key: str | None = None) -> PhotoUpload:
    """Validate, sanitize and store one photo with its display copy and thumbnail.

    Either all three objects in storage and the row exist afterwards, or none does.
    With an `idempotency_key` (per volunteer), a retry of the same upload returns the
    first photo (replayed=True) instead of a second one or a duplicate error; the same key
    with another file, challenge or label is refused (422 idempotency_key_reused).
    An exact duplicate is refused (409); a near duplicate is accepted and flagged.
    An imported photo is accepted only as the clean stored copy an export wrote (re-encoding
    would change its hash). After the commit, a volunteer's photo starts its follow-ups.
    """
    if idempotency_key is not None:
        # Cheap path first: a retry is answered from the key without decoding anything.
        replay = _upload_replay(new=new, key=idempotency_key)
        if replay is not None:
            return PhotoUpload(photo=replay, replayed=True)
    label = _upload_admit(new=new)
    sanitized = _upload_sanitize(new=new)
    photo = _photo_build(new=new, label=label, sanitized=sanitized)
    names = _storage_save_all(
        [
            (photo_upload_to(photo, sanitized.content_extension), sanitized.content),
            (photo_display_to(photo, ""), sanitized.display),
            (photo_thumbnail_to(photo, ""), sanitized.thumbnail),
        ]
    )
    photo.image.name, photo.display_image.name, photo.thumbnail.name = names
    result = _photo_commit(new=new, photo=photo, names=names, sanitized=sanitized, idempotency_key=idempotency_key)
    if new.from_volunteer and not result.replayed:
        transaction.on_commit(lambda: photo_followups_start(photo=photo))
    return result


def _upload_replay(*, new: NewPhoto, key: str, upload_sha256: str | None = None) -> Photo | None:
    """The photo an earlier request with this Idempotency-Key created (same volunteer), or None.

    ``upload_sha256`` defaults to the digest of the bytes as sent (read without decoding them).
    """
    if new.volunteer is None:
        raise ValidationFailed("An Idempotency-Key needs a volunteer.", code="invalid_idempotency_key")
    return _idempotent_replay(
        volunteer=new.volunteer, key=key, upload_sha256=upload_sha256 or upload_digest(new.upload),
        challenge=new.challenge, label_name=new.label_name,
    )


def _upload_admit(*, new: NewPhoto) -> Label:
    """The photo's label; a volunteer's photo also needs an open challenge and room in the daily quota."""
    label = _label_for(project=new.project, challenge=new.challenge, label_name=new.label_name)
    if new.from_volunteer:
        if new.challenge is not None:
            challenge_assert_open(challenge=new.challenge)
        _enforce_daily_quota(project=new.project, volunteer=new.volunteer)
    return label


def _upload_sanitize(*, new: NewPhoto) -> SanitizedImage:
    """Decode and re-encode the bytes without metadata; refuse exact duplicates and unclean imports."""
    sanitized = image_sanitize(
        upload=new.upload,
        size=new.size,
        max_bytes=settings.PLATFORM_UPLOAD_MAX_BYTES if new.max_bytes is None else new.max_bytes,
        max_pixels=settings.PLATFORM_UPLOAD_MAX_PIXELS,
        keep_clean_jpeg=new.imported is not None,
    )
    if new.imported is not None and sanitized.sha256 != sanitized.upload_sha256:
        raise ValidationFailed(
            "Not a stored copy as a data set export writes it (a metadata-free JPEG at its stored size).",
            code="not_a_stored_copy",
        )
    _refuse_exact_duplicate(project=new.project, sanitized=sanitized)
    return sanitized


def _photo_build(*, new: NewPhoto, label: Label, sanitized: SanitizedImage) -> Photo:
    """The photo's row, not saved yet: hashes, size, near-duplicate link and where it came from."""
    photo = Photo(
        project=new.project,
        label=label,
        challenge=new.challenge,
        volunteer=new.volunteer,
        source=new.source,
        status=new.status,
        width=sanitized.width,
        height=sanitized.height,
        source_format=sanitized.source_format,
        upload_sha256=sanitized.upload_sha256,
        sha256=sanitized.sha256,
        phash=sanitized.phash,
        near_duplicate_of_id=_near_duplicate_of(project=new.project, phash=sanitized.phash),
        # Committed with the row: a follow-up the broker loses is re-queued from here.
        followups_pending=new.from_volunteer,
    )
    if new.app is not None:
        photo.app_key_id = new.app.app_key_id
        photo.app_name = new.app.app_name
        photo.predicted_label = new.app.predicted_label
        photo.model_version = new.app.model_version
    if new.imported is not None:
        photo.public_id = new.imported.public_id
        photo.split_key = new.imported.split_key
    return photo


def _photo_commit(
    *, new: NewPhoto, photo: Photo, names: list[str], sanitized: SanitizedImage, idempotency_key: str | None
) -> PhotoUpload:
    """Save the row (and its Idempotency-Key); on any failure remove the stored objects.

    A concurrent request that won a race (the same key, or the same bytes) is answered as if it
    had come first: its photo replayed, or the duplicate refused.
    """
    try:
        with transaction.atomic():
            photo.save()
            if idempotency_key is not None:
                UploadIdempotencyKey.objects.create(volunteer=new.volunteer, key=idempotency_key, photo=photo)
    except IntegrityError:
        _storage_delete(names)
        if idempotency_key is not None:
            replay = _upload_replay(new=new, key=idempotency_key, upload_sha256=sanitized.upload_sha256)
            if replay is not None:
                return PhotoUpload(photo=replay, replayed=True)
        _refuse_exact_duplicate(project=new.project, sanitized=sanitized)
        raise
    except BaseException:
        _storage_delete(names)
        raise
    return PhotoUpload(photo=photo)


def photo_feedback_create(
    *, project: Project, label_name: str, upload: BinaryIO, size: int, app: AppFeedback
) -> Photo:
    """A misprediction photo from an app: a pending contribution with no volunteer.

    The same hostile-upload pipeline as every photo (size and type checks, decoded by Pillow,
    metadata stripped, exact duplicates refused with 409, near duplicates flagged), under
    PLATFORM_FEEDBACK_MAX_BYTES. ``label_name`` is the label the user chose; it must be one
    of the project's labels. No challenge (the app is not answering one), no daily quota and
    no leaderboard points (there is no volunteer; the app endpoint has per-key rate limits).
    It is not scored by the current model either: the app's own prediction is recorded, and
    it disagrees with the label by definition. It enters training only once approved.
    """
    return photo_upload(
        new=NewPhoto(project=project, label_name=label_name, upload=upload, size=size, volunteer=None,
                     source=Photo.Source.APP, status=Photo.Status.PENDING,
                     max_bytes=settings.PLATFORM_FEEDBACK_MAX_BYTES, app=app),
    ).photo


def photo_delete(*, photo: Photo, volunteer: AbstractBaseUser) -> None:
    """A volunteer withdraws their own pending photo: the row and all stored copies go.

    Moderated photos stay (they may already count for the leaderboard or a dataset).
    """
    if photo.volunteer_id != volunteer.pk:
        raise NotFound("No such photo.", code="not_found")
    names = [name for name in (photo.image.name, photo.display_image.name, photo.thumbnail.name) if name]
    with transaction.atomic():
        # Re-read under the write lock: moderation may have decided in the meantime.
        locked = Photo.objects.select_for_update().filter(pk=photo.pk).values_list("status", flat=True).first()
        if locked is None:
            raise NotFound("No such photo.", code="not_found")
        if locked != Photo.Status.PENDING:
            raise Conflict("Only pending photos can be deleted.", code="not_pending")
        photo.delete()
        # Objects go only once the row is gone for good (a rollback keeps both).
        transaction.on_commit(lambda: _storage_delete(names))


# Sent inside photo_moderate's transaction after every decision (moderator None: automatic).
# Rooms above submissions (verification) react to staff decisions without being imported here.
photo_moderated = Signal()


def photo_moderate(
    *, photo: Photo, moderator: AbstractBaseUser | None, approve: bool, reason: str = ""
) -> Photo:
    """Approve or reject a photo; a rejection needs a reason the volunteer will see.

    ``moderator`` None is an automatic decision (verification by volunteers).
    """
    if not approve and not reason.strip():
        raise ValidationFailed("A rejection needs a reason.", code="reason_required")
    with transaction.atomic():
        # Two moderators deciding at once: the second waits and scores from the first's result.
        try:
            previous_status = Photo.objects.select_for_update().values_list("status", flat=True).get(pk=photo.pk)
        except Photo.DoesNotExist:
            raise NotFound("This photo no longer exists (its volunteer deleted it).", code="not_found") from None
        photo.status = Photo.Status.APPROVED if approve else Photo.Status.REJECTED
        photo.reject_reason = "" if approve else reason.strip()
        photo.moderated_by = moderator
        photo.moderated_at = timezone.now()
        photo.save(update_fields=["status", "reject_reason", "moderated_by", "moderated_at", "updated_at"])
        score_photo_moderated(photo=photo, previous_status=previous_status)
        photo_moderated.send(sender=Photo, photo=photo, moderator=moderator, previous_status=previous_status)
    return photo


def photo_reopen(*, photo: Photo, moderator: AbstractBaseUser) -> Photo:
    """Put a decided photo back to pending (an automatic decision reversed); points follow."""
    with transaction.atomic():
        try:
            previous_status = Photo.objects.select_for_update().values_list("status", flat=True).get(pk=photo.pk)
        except Photo.DoesNotExist:
            raise NotFound("This photo no longer exists (its volunteer deleted it).", code="not_found") from None
        photo.status = Photo.Status.PENDING
        photo.reject_reason = ""
        photo.moderated_by = moderator
        photo.moderated_at = timezone.now()
        photo.save(update_fields=["status", "reject_reason", "moderated_by", "moderated_at", "updated_at"])
        score_photo_moderated(photo=photo, previous_status=previous_status)
    return photo


# --- upload follow-ups --------------------------------------------------------------------

# Sent after the commit of an upload or a relabel (photo_id): the photo waits for the current
# model's score. Training listens (``training.tasks``, connected in its AppConfig.ready) and
# queues the scoring on the light queue; the photo stays ``followups_pending`` until it ran, so
# what the broker loses is queued again from the database.
photo_followups_due = Signal()


def photo_followups_start(*, photo: Photo) -> None:
    """After an upload commits: flag suspicious volume now, and announce that the photo awaits its score.

    Meant for ``transaction.on_commit``. Nothing here may fail an upload that already succeeded,
    so errors are logged, not raised: the photo stays ``followups_pending`` and is queued again.
    """
    try:
        photo_flag_suspicious_volume(photo=photo)
    except Exception:  # a follow-up; the upload itself already succeeded
        logger.exception("suspicious-volume check failed for photo %s", photo.pk)
    photo_followups_announce(photo_id=photo.pk)


def photo_followups_announce(*, photo_id: int) -> None:
    """Send ``photo_followups_due`` for a committed photo; a listener's error is logged, never raised."""
    for receiver, result in photo_followups_due.send_robust(sender=Photo, photo_id=photo_id):
        if isinstance(result, Exception):
            logger.error("follow-up listener %s failed for photo %s: %r; it stays pending",
                         getattr(receiver, "__qualname__", receiver), photo_id, result)


def photo_flag_suspicious_volume(*, photo: Photo) -> bool:
    """Flag the photo when its volunteer sent more than the hourly limit in the hour up to it.

    The limit is ``PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR`` (default 60). Returns the flag.
    """
    if photo.volunteer_id is None:
        return False
    limit = settings.PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR
    until = photo.created_at or timezone.now()
    recent = Photo.objects.filter(
        volunteer_id=photo.volunteer_id, created_at__gt=until - dt.timedelta(hours=1), created_at__lte=until
    ).count()
    if recent <= limit:
        return False
    if not photo.flag_suspicious_volume:
        photo.flag_suspicious_volume = True
        # update(): a moderator may be editing the row; touch only the flag.
        Photo.objects.filter(pk=photo.pk).update(flag_suspicious_volume=True)
    return True


def photo_model_score_save(*, photo: Photo, confidence: float, top_label: str, top_confidence: float) -> None:
    """Record the current model's score of a photo and set the disagreement flag.

    ``confidence`` is the model's probability for the claimed label; below
    ``PLATFORM_MODEL_DISAGREEMENT_THRESHOLD`` (default 0.2) the photo is flagged "model disagrees".
    """
    photo.model_confidence = confidence
    photo.model_top_label, photo.model_top_confidence = top_label, top_confidence
    photo.flag_model_disagreement = confidence < settings.PLATFORM_MODEL_DISAGREEMENT_THRESHOLD
    # update(): touch only the score, never a moderator's concurrent decision; and only if
    # the label is still the one scored (a relabel in between re-queues its own scoring).
    Photo.objects.filter(pk=photo.pk, label_id=photo.label_id).update(
        model_confidence=photo.model_confidence, flag_model_disagreement=photo.flag_model_disagreement,
        model_top_label=photo.model_top_label, model_top_confidence=photo.model_top_confidence,
    )


def photo_followups_done(*, photo: Photo) -> None:
    """Mark a photo's follow-ups done, for the label that was scored (a relabel since keeps it pending)."""
    Photo.objects.filter(pk=photo.pk, label_id=photo.label_id).update(followups_pending=False)


def _label_for(*, project: Project, challenge: Challenge | None, label_name: str) -> Label:
    labels = challenge.labels.all() if challenge is not None else project.labels.all()
    label = next((label for label in labels if label.name == label_name), None)
    if label is None:
        names = ", ".join(sorted(label.name for label in labels))
        message = f"Unknown label {label_name!r}; choose one of: {names}."
        raise ValidationFailed(message, code="unknown_label", extra={"fields": {"label": message}})
    return label


def _refuse_exact_duplicate(*, project: Project, sanitized: SanitizedImage) -> None:
    original = Photo.objects.filter(project=project, upload_sha256=sanitized.upload_sha256).first()
    if original is not None:
        raise Conflict(
            "This exact photo was already sent.",
            code="duplicate_photo",
            extra={"original_id": str(original.public_id)},
        )


def _idempotent_replay(
    *, volunteer: AbstractBaseUser, key: str, upload_sha256: str, challenge: Challenge | None, label_name: str
) -> Photo | None:
    """The photo an earlier request with this key created, or None for a new key."""
    earlier = (
        UploadIdempotencyKey.objects.filter(volunteer=volunteer, key=key)
        .select_related("photo__label", "photo__project", "photo__challenge")
        .first()
    )
    if earlier is None:
        return None
    photo = earlier.photo
    if (photo.upload_sha256, photo.challenge_id, photo.label.name) != (
        upload_sha256, challenge.pk if challenge else None, label_name
    ):
        raise UnprocessableEntity(
            "This Idempotency-Key was already used for a different upload; use a new key.",
            code="idempotency_key_reused",
            extra={"original_id": str(photo.public_id)},
        )
    return photo


def _enforce_daily_quota(*, project: Project, volunteer: AbstractBaseUser) -> None:
    """At most PLATFORM_UPLOAD_DAILY_QUOTA photos per volunteer, project and project day.

    Counted in the database, so it holds across processes and restarts. Two requests racing
    at the limit may both pass (one photo over): acceptable for a fairness quota, and the
    burst throttle bounds it. Photos a volunteer deleted no longer count.
    """
    quota = settings.PLATFORM_UPLOAD_DAILY_QUOTA
    zone = zoneinfo.ZoneInfo(project.time_zone)
    now = timezone.now()
    today = project_today(project=project, now=now)
    day_start = dt.datetime.combine(today, dt.time.min, tzinfo=zone)
    day_end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
    sent = Photo.objects.filter(
        project=project, volunteer=volunteer, created_at__gte=day_start, created_at__lt=day_end
    ).count()
    if sent >= quota:
        retry_after = max(1, math.ceil((day_end - now).total_seconds()))
        raise TooManyRequests(
            f"You have sent {sent} photos to this project today; the daily limit is {quota}. "
            "Thank you! Come back tomorrow.",
            code="daily_quota_exceeded",
            retry_after=retry_after,
        )


def _near_duplicate_of(*, project: Project, phash: str) -> int | None:
    """The id of the project's earlier photo closest to `phash`, if within the threshold.

    One query over every (id, phash) of the project, compared in Python: about a
    microsecond per photo, fine for tens of thousands. Beyond that, index bands of the
    hash (split the 64 bits into threshold+1 bands: two hashes within the threshold share
    at least one band exactly) and compare only candidates sharing a band.
    Rejected photos do not count: a better retake of a refused photo is welcome.
    """
    threshold = settings.PLATFORM_NEAR_DUPLICATE_DISTANCE
    if threshold < 0 or not phash:
        return None
    wanted = int(phash, 16)
    best: tuple[int, int] | None = None
    candidates = (
        Photo.objects.filter(project=project)
        .exclude(status=Photo.Status.REJECTED)
        .exclude(phash="")
        .order_by("id")
        .values_list("id", "phash")
    )
    for photo_id, other in candidates.iterator(chunk_size=5000):
        distance = (wanted ^ int(other, 16)).bit_count()
        if distance <= threshold and (best is None or distance < best[0]):
            best = (distance, photo_id)
            if distance == 0:
                break
    return best[1] if best else None


def _storage_save_all(items: list[tuple[str, bytes]]) -> list[str]:
    """Save every (name, content); if one fails, delete the ones already saved."""
    names: list[str] = []
    try:
        for name, content in items:
            names.append(_storage_save(name, content))
    except BaseException:
        _storage_delete(names)
        raise
    return names


def _storage_delete(names: Iterable[str]) -> None:
    """Delete stored objects, best effort: a leftover object is logged, not raised."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception as exc:  # an orphan object is harmless; hiding the real error is not
            logger.warning("storage delete failed for %s: %s", name, exc)


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
