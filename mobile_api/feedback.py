"""Misprediction feedback: an app sends the photo, what its model predicted and what the user chose.

The photo becomes a pending contribution of the app (no volunteer account) in the moderation
queue, through the same hostile-upload pipeline as every volunteer photo
(``submissions.services.photo_feedback_create``). It counts for training only once a
moderator approves it, like every other photo. The endpoint: mobile_api/api_feedback.py.
"""
from __future__ import annotations

from challenges.models import Project
from common.errors import NotFound, ValidationFailed
from mobile_api.auth import AppIdentity
from submissions.models import Photo
from submissions.services import AppFeedback, photo_feedback_create
from training.models import ModelVersion


def feedback_project_get(*, name: str) -> Project:
    """The active project (model) an app sends feedback about, or 404 model_not_found."""
    project = Project.objects.filter(slug=name, is_active=True).prefetch_related("labels").first()
    if project is None:
        raise NotFound(f"No model named {name!r}.", code="model_not_found")
    return project


def feedback_check_prediction(*, project: Project, version: int | None, predicted_label: str) -> None:
    """Refuse a version the project never published, or a prediction that version cannot make.

    Without a version, the prediction is recorded as sent (it only informs the moderator).
    """
    if version is None:
        return
    labels = (
        ModelVersion.objects.filter(project=project, version=version).values_list("labels", flat=True).first()
    )
    if labels is None:
        message = f"Model {project.slug!r} has no version {version}."
        raise ValidationFailed(message, code="unknown_version", extra={"fields": {"version": message}})
    names = labels.values() if isinstance(labels, dict) else labels
    if predicted_label not in names:
        message = f"Version {version} of {project.slug!r} has no label {predicted_label!r}."
        raise ValidationFailed(message, code="unknown_label", extra={"fields": {"predicted_label": message}})


def feedback_create(
    *, identity: AppIdentity, name: str, photo, predicted_label: str, label: str, version: int | None
) -> Photo:
    """Check the report against the model and store the photo as the app's pending contribution."""
    project = feedback_project_get(name=name)
    feedback_check_prediction(project=project, version=version, predicted_label=predicted_label)
    return photo_feedback_create(
        project=project,
        label_name=label,
        upload=photo,
        size=photo.size,
        app=AppFeedback(
            app_key_id=identity.key_id, app_name=identity.name, predicted_label=predicted_label,
            model_version=version,
        ),
    )
