"""Moderation writes beyond approve/reject: bulk decisions, relabel, feature, and flags.

Approve and reject themselves stay in ``submissions.services.photo_moderate`` (scoring
hangs off it); this module adds what staff do around it, and the automatic flags a
moderator filters the queue by: suspicious volume and disagreement with the current model.

Scoring never imports torch: the web process and the worker that scores photos use the
ONNX file the apps download, run by onnxruntime (``training.ml.inference``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from challenges.models import Label
from common.errors import ValidationFailed
from submissions.models import Photo
from submissions.services import photo_moderate

logger = logging.getLogger(__name__)


# --- bulk decisions ---------------------------------------------------------------------


def photo_approve_many(*, photos: Iterable[Photo], moderator: AbstractBaseUser) -> int:
    """Approve every photo (each through ``photo_moderate``, so scores follow); return how many."""
    count = 0
    with transaction.atomic():
        for photo in photos:
            photo_moderate(photo=photo, moderator=moderator, approve=True)
            count += 1
    return count


def photo_reject_many(*, photos: Iterable[Photo], moderator: AbstractBaseUser, reason: str) -> int:
    """Reject every photo with the same reason the volunteers will see; return how many.

    A rejected photo cannot stay featured, so rejection unfeatures it.
    """
    reason = (reason or "").strip()
    if not reason:
        # Checked before the first write: all or nothing.
        raise ValidationFailed("A rejection needs a reason.", code="reason_required")
    count = 0
    with transaction.atomic():
        for photo in photos:
            photo_moderate(photo=photo, moderator=moderator, approve=False, reason=reason)
            if photo.featured:
                _set_featured(photo=photo, featured=False)
            count += 1
    return count


# --- relabel and feature ----------------------------------------------------------------


def photo_relabel(*, photo: Photo, label: Label, moderator: AbstractBaseUser) -> Photo:
    """Move a photo to another label of its own project, and record who did it and why.

    The record is an admin log entry on the photo ("Relabelled from a to b"), visible in its
    history. The old model score was for the old label, so it is cleared and the photo is
    scored again after commit.
    """
    if label.project_id != photo.project_id:
        raise ValidationFailed(
            f"{label.name!r} is not a label of project {photo.project.slug!r}.", code="label_not_in_project"
        )
    if label.pk == photo.label_id:
        return photo
    previous = photo.label
    photo.label = label
    photo.model_confidence = None
    photo.model_top_label, photo.model_top_confidence = "", None
    photo.flag_model_disagreement = False
    photo.followups_pending = True
    with transaction.atomic():
        photo.save(
            update_fields=[
                "label", "model_confidence", "model_top_label", "model_top_confidence", "flag_model_disagreement",
                "followups_pending", "updated_at",
            ]
        )
        _log_change(photo=photo, user=moderator, message=f"Relabelled from {previous.name} to {label.name}.")
        transaction.on_commit(lambda: _score_later(photo_id=photo.pk))
    return photo


def photo_feature(*, photo: Photo, featured: bool, moderator: AbstractBaseUser) -> Photo:
    """Feature (or unfeature) a photo on the public pages; only approved photos can be featured."""
    if featured and photo.status != Photo.Status.APPROVED:
        raise ValidationFailed("Only approved photos can be featured.", code="photo_not_approved")
    if photo.featured == featured:
        return photo
    with transaction.atomic():
        _set_featured(photo=photo, featured=featured)
        _log_change(photo=photo, user=moderator, message="Featured." if featured else "Unfeatured.")
    return photo


def _set_featured(*, photo: Photo, featured: bool) -> None:
    photo.featured = featured
    photo.featured_at = timezone.now() if featured else None
    photo.save(update_fields=["featured", "featured_at", "updated_at"])


def _log_change(*, photo: Photo, user: AbstractBaseUser, message: str) -> None:
    LogEntry.objects.create(
        user_id=user.pk,
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        object_repr=str(photo)[:200],
        action_flag=CHANGE,
        change_message=message,
    )


# --- flags ------------------------------------------------------------------------------


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


def photo_followups_enqueue(*, photo: Photo) -> None:
    """After an upload commits: flag suspicious volume now, score with the current model later.

    Meant for ``transaction.on_commit`` in the upload service. A broker outage must not
    fail an upload that already succeeded, so enqueue errors are logged, not raised: the
    photo stays ``followups_pending`` and ``photo_followups_resume`` queues it again.
    """
    try:
        photo_flag_suspicious_volume(photo=photo)
    except Exception:  # a follow-up; the upload itself already succeeded
        logger.exception("suspicious-volume check failed for photo %s", photo.pk)
    _score_later(photo_id=photo.pk)


def _score_later(*, photo_id: int) -> None:
    from submissions.tasks import photo_score_with_current_model

    try:
        photo_score_with_current_model.delay(photo_id)
    except Exception:
        logger.exception("could not enqueue model scoring for photo %s; it stays pending", photo_id)


# Pending for longer than this: the scoring itself keeps failing (logged by the worker).
# It was retried at every resume tick for a day; retrying for ever would only burn the
# worker's time. The photo is still moderated as usual, just without a model score.
FOLLOWUPS_RESUME_GIVE_UP_AFTER = dt.timedelta(days=1)


def photo_followups_requeue(*, older_than: dt.timedelta, limit: int = 500) -> int:
    """Queue again the scoring of photos still pending after ``older_than``; return how many.

    The broker may lose a follow-up (down during the upload, restarted empty); the
    ``followups_pending`` flag in the database does not. Younger photos are left alone:
    their task is most likely on its way. Scoring twice gives the same result, so a photo
    queued twice costs time, not correctness. An enqueue error is raised (the next run
    tries again) rather than paid once per photo.
    """
    from submissions.tasks import photo_score_with_current_model

    now = timezone.now()
    pending = (
        Photo.objects.filter(
            followups_pending=True,
            updated_at__lt=now - older_than,
            updated_at__gte=now - FOLLOWUPS_RESUME_GIVE_UP_AFTER,
        )
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    count = 0
    for photo_id in list(pending):
        photo_score_with_current_model.delay(photo_id)
        # The clock restarts: a photo is queued again at most once per ``older_than``, so a
        # backlog behind a slow worker is not queued anew at every run.
        Photo.objects.filter(pk=photo_id, followups_pending=True).update(updated_at=now)
        count += 1
    if count:
        logger.info("re-queued the follow-ups of %s photo(s)", count)
    return count


def photo_followups_run(*, photo: Photo) -> float | None:
    """The queued follow-ups of an upload or relabel: score with the current model, mark them done.

    Done only for the label that was scored: a relabel in between keeps the photo pending
    until its own scoring ran.
    """
    confidence = photo_score_with_model(photo=photo)
    Photo.objects.filter(pk=photo.pk, label_id=photo.label_id).update(followups_pending=False)
    return confidence


# --- model disagreement -----------------------------------------------------------------

# onnxruntime sessions by artifact sha256: building one costs far more than a prediction,
# and a published artifact never changes (its sha256 names its bytes). Bounded: a worker
# only ever needs the current version of each project.
_SESSIONS: OrderedDict[str, object] = OrderedDict()
_SESSIONS_LOCK = threading.Lock()
_SESSIONS_MAX = 4


def photo_score_with_model(*, photo: Photo) -> float | None:
    """Score the photo's claimed label with the latest published model; set the flag.

    Stores ``model_confidence`` (the model's probability for the claimed label) and sets
    ``flag_model_disagreement`` when it is below ``PLATFORM_MODEL_DISAGREEMENT_THRESHOLD``
    (default 0.2). Returns the confidence, or None when there is nothing to score with
    (no published ONNX model, or the model does not know the label).
    """
    from PIL import Image

    from training.ml.config import Preprocessing
    from training.ml.images import image_to_array
    from training.ml.inference import onnx_predict
    from training.models import ModelArtifact

    artifact = (
        ModelArtifact.objects.filter(version__project_id=photo.project_id, format="onnx")
        .select_related("version")
        # The newest version; fp32 first: it is the reference the others are checked against.
        .order_by("-version__version", "precision")
        .first()
    )
    if artifact is None:
        return None
    version = artifact.version
    labels = _label_names(version.labels)
    if photo.label.name not in labels:
        return None
    session = _session_for(artifact=artifact)
    preprocessing = Preprocessing.from_manifest(version.preprocessing)
    with default_storage.open(photo.image.name, "rb") as fh:
        with Image.open(fh) as image:
            array = image_to_array(image, preprocessing=preprocessing)
    probabilities = onnx_predict(path_or_bytes=session, batch=array[None])
    confidence = float(probabilities[0][labels.index(photo.label.name)])
    top = int(probabilities[0].argmax())
    threshold = settings.PLATFORM_MODEL_DISAGREEMENT_THRESHOLD
    photo.model_confidence = confidence
    photo.model_top_label, photo.model_top_confidence = labels[top], float(probabilities[0][top])
    photo.flag_model_disagreement = confidence < threshold
    # update(): touch only the score, never a moderator's concurrent decision; and only if
    # the label is still the one scored (a relabel in between re-queues its own scoring).
    Photo.objects.filter(pk=photo.pk, label_id=photo.label_id).update(
        model_confidence=photo.model_confidence, flag_model_disagreement=photo.flag_model_disagreement,
        model_top_label=photo.model_top_label, model_top_confidence=photo.model_top_confidence,
    )
    return confidence


def _label_names(labels) -> list[str]:
    # Output index -> name: a list, or a JSON object keyed by the index as text.
    if isinstance(labels, dict):
        return [labels[key] for key in sorted(labels, key=int)]
    return list(labels)


def _session_for(*, artifact):
    """The cached onnxruntime session of an artifact; its bytes are checked against its sha256."""
    from training.ml.inference import onnx_session

    with _SESSIONS_LOCK:
        session = _SESSIONS.get(artifact.sha256)
        if session is not None:
            _SESSIONS.move_to_end(artifact.sha256)
            return session
    with default_storage.open(artifact.file.name, "rb") as fh:
        payload = fh.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != artifact.sha256:
        raise ValueError(f"artifact {artifact.pk} bytes have sha256 {digest}, the registry says {artifact.sha256}")
    # One thread: scoring runs next to web or training work on a small machine.
    session = onnx_session(path_or_bytes=payload, num_threads=1)
    with _SESSIONS_LOCK:
        _SESSIONS[artifact.sha256] = session
        while len(_SESSIONS) > _SESSIONS_MAX:
            _SESSIONS.popitem(last=False)
    return session
