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
    assert client.get(url).status_code == 404  # as if it did not exist
    for user in (volunteer, staff):
        client.force_login(user)
        response = client.get(url)
        # A small photo's training copy is a PNG (issue 16), served as one.
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert b"".join(response.streaming_content)[:4] == b"\x89PNG"


def test_moderation_queue_filters_by_status_label_challenge_and_flags(staff_api, project, challenge, volunteer):
    from tests.moderation.conftest import make_photo

    pending_ant = make_photo(project=project, label="ants", volunteer=volunteer, challenge=challenge)
    flagged_bee = make_photo(project=project, label="bees", volunteer=volunteer, flag_suspicious_volume=True)
    approved_bee = make_photo(project=project, label="bees", volunteer=volunteer, status=Photo.Status.APPROVED)

    def ids(query=""):
        response = staff_api.get(f"/api/v1/moderation/photos/{query}")
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {str(pending_ant.public_id), str(flagged_bee.public_id)}  # pending by default
    assert ids("?status=all&label=bees") == {str(flagged_bee.public_id), str(approved_bee.public_id)}
    assert ids(f"?challenge={challenge.pk}") == {str(pending_ant.public_id)}
    assert ids("?flag=suspicious_volume") == {str(flagged_bee.public_id)}
    row = staff_api.get("/api/v1/moderation/photos/?flag=suspicious_volume").json()["results"][0]
    assert row["flag_suspicious_volume"] is True and row["volunteer"] == volunteer.pk

    bad = staff_api.get("/api/v1/moderation/photos/?flag=blurry")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid" and "flag" in bad.json()["error"]["message"]


def test_volunteers_filter_their_own_photos_by_status(volunteer_api, project, volunteer):
    from tests.factories import UserFactory
    from tests.moderation.conftest import make_photo

    mine = make_photo(project=project, volunteer=volunteer, status=Photo.Status.REJECTED, reject_reason="Blurry")
    make_photo(project=project, volunteer=volunteer)
    make_photo(project=project, volunteer=UserFactory(), status=Photo.Status.REJECTED)
    rows = volunteer_api.get("/api/v1/photos/?status=rejected").json()["results"]
    assert [row["id"] for row in rows] == [str(mine.public_id)]
    assert rows[0]["reject_reason"] == "Blurry"


@pytest.mark.parametrize("value", ["99999999999999999999999", "1.5", "-3", "ants"])
def test_a_challenge_filter_that_is_not_an_id_is_a_400(staff_api, value):
    response = staff_api.get(f"/api/v1/moderation/photos/?challenge={value}")
    assert response.status_code == 400
    assert "challenge" in response.json()["error"]["message"]
