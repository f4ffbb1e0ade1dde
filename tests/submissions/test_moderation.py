"""Staff moderate photos through the API and the Django admin; volunteers cannot."""
import pytest
from django.urls import reverse

from submissions.models import Photo
from submissions.services import photo_create
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(challenge, volunteer):
    import io

    data = jpeg_bytes()
    return photo_create(
        project=challenge.project, challenge=challenge, label_name="bees", upload=io.BytesIO(data),
        size=len(data), volunteer=volunteer,
    )


def _decide(client, photo, **body):
    return client.post(f"/api/v1/moderation/photos/{photo.public_id}/decision/", body, format="json")


def test_staff_approve_and_reject_through_the_api(staff_api, staff, pending):
    assert [p["id"] for p in staff_api.get("/api/v1/moderation/photos/").json()["results"]] == [str(pending.public_id)]

    response = _decide(staff_api, pending, decision="approve")
    assert response.status_code == 200 and response.json()["status"] == "approved"
    pending.refresh_from_db()
    assert pending.moderated_by == staff and pending.moderated_at is not None
    assert staff_api.get("/api/v1/moderation/photos/").json()["results"] == []

    response = _decide(staff_api, pending, decision="reject", reason="Blurry")
    assert response.json()["status"] == "rejected" and response.json()["reject_reason"] == "Blurry"


def test_rejection_needs_a_reason(staff_api, pending):
    response = _decide(staff_api, pending, decision="reject")
    assert response.status_code == 400 and response.json()["error"]["code"] == "reason_required"
    pending.refresh_from_db()
    assert pending.status == Photo.Status.PENDING


def test_volunteer_calling_a_staff_endpoint_is_403(volunteer_api, pending):
    assert volunteer_api.get("/api/v1/moderation/photos/").status_code == 403
    response = _decide(volunteer_api, pending, decision="approve")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    pending.refresh_from_db()
    assert pending.status == Photo.Status.PENDING


def test_admin_bulk_approve_action(client, staff, pending):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    response = client.post(
        reverse("admin:submissions_photo_changelist"),
        {"action": "approve", "_selected_action": [pending.pk]},
        follow=True,
    )
    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == Photo.Status.APPROVED and pending.moderated_by == staff


def test_photo_image_is_visible_to_its_volunteer_and_staff_only(client, volunteer, staff, pending):
    from tests.factories import UserFactory

    url = reverse("photo-image", args=[pending.public_id])
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403
    for user in (volunteer, staff):
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
        assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"
