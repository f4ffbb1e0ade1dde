"""What a volunteer is told about a photo: the current model's opinion and what happens next.

One place for the wording, used by the API (``model_opinion``, ``next_step``), the upload
page (which polls the API) and /me/photos/.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from submissions.models import Photo


@dataclass(frozen=True)
class ReviewTime:
    """The median time from upload to a decision, over the `n` latest decisions."""

    median: timedelta
    n: int


def photo_model_opinion(*, photo: Photo) -> dict | None:
    """``{label, confidence, agrees, unsure, message}``, or None while the model has not scored it.

    "Unsure" is a top probability below PLATFORM_MODEL_UNSURE_BELOW (0.7): the photos near the
    model's decision boundary are the ones uncertainty sampling picks as the most informative,
    and below 0.7 a calibrated model is wrong about one time in three or more. A model that
    prefers another label than the volunteer's is the "non-obvious setting" the project asks for.
    """
    if not photo.model_top_label or photo.model_top_confidence is None:
        return None
    label, confidence = photo.model_top_label, photo.model_top_confidence
    percent = f"{confidence:.0%}"
    agrees = label == photo.label.name
    unsure = confidence < settings.PLATFORM_MODEL_UNSURE_BELOW
    if not agrees:
        message = (
            f"The model thought this was {label} ({percent}): thank you, this is the kind of photo "
            "it learns most from."
        )
    elif unsure:
        message = f"The model is unsure (maybe {label}, {percent}): exactly the photo it needs."
    else:
        message = f"The model sees {label} ({percent})."
    return {"label": label, "confidence": round(confidence, 4), "agrees": agrees, "unsure": unsure, "message": message}


def photo_review_time(*, project_id: int, latest: int = 200) -> ReviewTime | None:
    """Median time from upload to decision over the project's latest decisions (None below 5)."""
    since = timezone.now() - timedelta(days=30)
    rows = list(
        Photo.objects.filter(project_id=project_id, moderated_at__gte=since)
        .order_by("-moderated_at")
        .values_list("created_at", "moderated_at")[:latest]
    )
    if len(rows) < 5:
        return None
    return ReviewTime(median=statistics.median(done - sent for sent, done in rows), n=len(rows))


def photo_next_step(*, photo: Photo, review_time: ReviewTime | None = None) -> str:
    """Plain words on what happens to the photo next, and when its points arrive."""
    if photo.status == Photo.Status.APPROVED:
        return "Approved: it is in the next training snapshot, and its points are on your leaderboards."
    if photo.status == Photo.Status.REJECTED:
        reason = f" Reason: {photo.reject_reason}" if photo.reject_reason else ""
        return f"Not used for training, and it earns no points.{reason}"
    text = (
        "Next, people check that the label is right (staff, or other volunteers where "
        "the project lets them). Your points arrive when it is approved."
    )
    if photo.near_duplicate_of_id is not None:
        text += " It looks very much like an earlier photo, so it earns no points."
    if review_time is not None:
        text += f" That usually takes {_duration(review_time.median)} (median of the last {review_time.n} decisions)."
    return text


def _duration(value: timedelta) -> str:
    minutes = max(1, round(value.total_seconds() / 60))
    if minutes < 90:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(minutes / 60)
    if hours < 36:
        return f"about {hours} hours"
    return f"about {round(hours / 24)} days"


def photo_annotate_for_volunteer(photos) -> list[Photo]:
    """The photos with ``opinion`` and ``next_step`` attributes for the pages (one review-time query per project)."""
    photos = list(photos)
    review_times = {pid: photo_review_time(project_id=pid) for pid in {photo.project_id for photo in photos}}
    for photo in photos:
        photo.opinion = photo_model_opinion(photo=photo)
        photo.next_step = photo_next_step(photo=photo, review_time=review_times[photo.project_id])
    return photos
