"""App feedback through the upload pipeline: its own size limit, no volunteer, its own queue marks."""
import io

import pytest

from common.errors import PayloadTooLarge, ValidationFailed
from submissions.models import Photo
from submissions.services import AppFeedback, photo_feedback_create
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db

APP = AppFeedback(app_key_id=7, app_name="Android app", predicted_label="ants", model_version=3)


def _create(project, data: bytes, label: str = "bees") -> Photo:
    return photo_feedback_create(project=project, label_name=label, upload=io.BytesIO(data), size=len(data), app=APP)


def test_feedback_photo_is_a_pending_app_contribution(project):
    photo = _create(project, jpeg_bytes())
    assert (photo.source, photo.status, photo.volunteer, photo.challenge) == ("app", "pending", None, None)
    assert (photo.app_key_id, photo.app_name) == (7, "Android app")
    assert (photo.predicted_label, photo.model_version) == ("ants", 3)


def test_feedback_has_its_own_size_limit(project, settings, media_files):
    data = jpeg_bytes()
    settings.PLATFORM_UPLOAD_MAX_BYTES = len(data) * 10
    settings.PLATFORM_FEEDBACK_MAX_BYTES = len(data) - 1
    with pytest.raises(PayloadTooLarge):
        _create(project, data)
    assert media_files() == []


def test_an_unknown_label_names_the_field(project):
    with pytest.raises(ValidationFailed) as refused:
        _create(project, jpeg_bytes(), label="wasps")
    assert refused.value.code == "unknown_label" and "label" in refused.value.extra["fields"]


def test_the_admin_queue_filters_and_marks_app_feedback(project, admin_client):
    _create(project, jpeg_bytes())
    page = admin_client.get("/admin/submissions/photo/", {"source__exact": "app"})
    assert page.status_code == 200
    assert b"App feedback: Android app (model v3 said ants)" in page.content
