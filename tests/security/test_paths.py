"""Downloads and media cannot leave their storage.

URLs never carry a storage name: every file view maps an id (uuid, number, slug) to a
database row, and the row names the file. So two layers are tested: hostile URL parts never
reach a view that serves a file (404), and a damaged row whose name would leave the storage
root is answered 404 (JSON on the API), never a 500 and never the file outside.
"""
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from rest_framework.test import APIClient

from challenges.models import Label
from submissions.models import Photo
from tests.factories import UserFactory
from tests.mobile_api.test_manifest import publish
from tests.moderation.conftest import make_photo
from training.models import ModelArtifact

pytestmark = pytest.mark.django_db

SECRET = b"outside the storage root"
HOSTILE_URL_PARTS = [
    "..%2F..%2Fsecret.txt", "%2e%2e%2fsecret.txt", "%2E%2E/%2E%2E/secret.txt", "../../secret.txt",
    "%2Fetc%2Fpasswd", "..%5C..%5Csecret.txt", "onnx-fp32%00.txt", "onnx-fp32/../../secret.txt",
]


@pytest.fixture
def outside(_local_storage):
    """A file next to (not inside) the media folder, and the names that would reach it."""
    path = _local_storage.parent / "secret.txt"
    path.write_bytes(SECRET)
    names = ["../secret.txt", str(path), "models/../../secret.txt", "models\\..\\..\\secret.txt"]
    if connection.vendor != "postgresql":  # PostgreSQL itself refuses to store a NUL byte
        names.append("models/model.onnx\x00.txt")
    return names


@pytest.fixture
def app(db):
    from mobile_api.services import app_key_create

    client = APIClient()
    client.credentials(HTTP_X_APP_KEY=app_key_create(name="Path test")[1])
    return client


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("part", HOSTILE_URL_PARTS)
def test_hostile_url_parts_never_reach_a_file(part, app, project, outside, client):
    publish(project, 1, b"model bytes")
    volunteer = UserFactory(is_staff=True)
    client.force_login(volunteer)
    for response in (
        app.get(f"/api/mobile/v1/models/ants-bees/versions/1/{part}"),
        app.get(f"/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32/from/{part}"),
        app.get(f"/api/mobile/v1/models/{part}/versions/1/onnx-fp32"),
        client.get(f"/photos/{part}/image"),
        client.get(f"/labels/{part}/example"),
    ):
        assert response.status_code in (400, 404)
        assert SECRET not in _body(response)


def test_a_model_file_name_that_leaves_the_storage_is_a_json_404(app, project, outside):
    publish(project, 1, b"model bytes")
    artifact = ModelArtifact.objects.get()
    for name in outside:
        ModelArtifact.objects.filter(pk=artifact.pk).update(file=name)
        url = "/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32"
        response = app.get(url, HTTP_RANGE="bytes=0-")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found"
        assert app.head(url).status_code == 404


def test_photo_and_label_names_that_leave_the_storage_are_404(client, project, outside):
    owner = UserFactory()
    photo = make_photo(project=project, volunteer=owner, status=Photo.Status.APPROVED, featured=True)
    label = project.labels.get(name="ants")
    label.example_photo.name = default_storage.save("labels/examples/ant.jpg", ContentFile(b"jpeg"))
    label.save()
    client.force_login(owner)
    for name in outside:
        Photo.objects.filter(pk=photo.pk).update(image=name, display_image=name, thumbnail=name)
        Label.objects.filter(pk=label.pk).update(example_photo=name)
        for url in (f"/photos/{photo.public_id}/image", f"/photos/{photo.public_id}/display",
                    f"/photos/{photo.public_id}/thumbnail", f"/labels/{label.pk}/example"):
            response = client.get(url)
            assert response.status_code == 404, (url, name)
            assert SECRET not in _body(response)


def test_s3_refuses_the_same_names_without_a_request(settings, app, project, outside):
    publish(project, 1, b"model bytes")
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": "platform", "endpoint_url": "http://127.0.0.1:9", "access_key": "key",
                    "secret_key": "secret", "region_name": "us-east-1", "addressing_style": "path"},
    }}
    artifact = ModelArtifact.objects.get()
    for name in outside:
        ModelArtifact.objects.filter(pk=artifact.pk).update(file=name)
        response = app.get("/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32")
        assert response.status_code == 404, name  # not a redirect to a presigned URL for "../secret.txt"
