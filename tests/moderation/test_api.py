"""Staff API: relabel and feature one photo."""
import pytest

from submissions.models import Photo
from tests.factories import LabelFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def test_staff_relabel_within_the_project(staff_api, photo_factory):
    photo = photo_factory(label="ants")
    response = staff_api.post(f"/api/v1/moderation/photos/{photo.public_id}/relabel/", {"label": "bees"}, format="json")
    assert response.status_code == 200 and response.json()["label"] == "bees"


def test_relabel_to_a_label_of_another_project_is_400(staff_api, photo_factory):
    LabelFactory(project=ProjectFactory(slug="wasps"), name="wasps")
    photo = photo_factory(label="ants")
    url = f"/api/v1/moderation/photos/{photo.public_id}/relabel/"
    response = staff_api.post(url, {"label": "wasps"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "label_not_in_project"


def test_feature_needs_approval_and_staff(staff_api, volunteer_api, photo_factory):
    pending = photo_factory()
    url = f"/api/v1/moderation/photos/{pending.public_id}/feature/"
    assert volunteer_api.post(url, {"featured": True}, format="json").status_code == 403
    response = staff_api.post(url, {"featured": True}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "photo_not_approved"

    approved = photo_factory(status=Photo.Status.APPROVED)
    response = staff_api.post(f"/api/v1/moderation/photos/{approved.public_id}/feature/", {"featured": True},
                              format="json")
    assert response.status_code == 200 and response.json()["featured"] is True
