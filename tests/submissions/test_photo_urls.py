"""The photo URLs the API hands out work with the API's own token, for a limited time only.

``display_url`` and ``thumbnail_url`` are signed (like S3 presigned URLs): an app holding a
token (no session cookie) can show a volunteer their own photos; a tampered or expired
signature, or a signature for another photo or copy, is the same 404 as a missing photo.
Private copies are never cached by a browser (``private, no-store``).
"""
from __future__ import annotations

import io
import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.core import signing
from django.test import Client
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from submissions.models import Photo
from tests.conftest import jpeg_bytes
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _token_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def _upload(client, challenge, color=(200, 30, 30)) -> dict:
    upload = io.BytesIO(jpeg_bytes(color=color))
    upload.name = "ant.jpg"
    response = client.post("/api/v1/photos/", {"challenge": challenge.pk, "label": "ants", "image": upload},
                           format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def _fetch(url: str):
    """A request as an <img> tag or a download sends it: no cookie, no token."""
    parts = urlsplit(url)
    return Client().get(parts.path, parse_qs(parts.query))


def test_a_token_client_can_show_its_own_photos(volunteer, challenge):
    api = _token_client(volunteer)
    sent = _upload(api, challenge)
    detail = api.get(f"/api/v1/photos/{sent['id']}/").json()
    for key, size in (("display_url", 64), ("thumbnail_url", 64)):
        response = _fetch(detail[key])
        assert response.status_code == 200, (key, response.status_code)
        image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
        assert image.format == "JPEG" and max(image.size) == size
        assert response["Cache-Control"] == "private, no-store"
    listed = api.get("/api/v1/photos/").json()["results"][0]
    assert _fetch(listed["thumbnail_url"]).status_code == 200


def test_without_a_signature_another_volunteers_pending_photo_stays_hidden(volunteer, challenge):
    sent = _upload(_token_client(volunteer), challenge)
    other = _token_client(UserFactory())
    assert other.get(f"/api/v1/photos/{sent['id']}/").status_code == 404
    photo = Photo.objects.get()
    for path in (f"/photos/{photo.public_id}/display", f"/photos/{photo.public_id}/thumbnail"):
        assert Client().get(path).status_code == 404
        assert other.get(path).status_code == 404  # a token does not open page routes either


def test_tampered_swapped_or_expired_signatures_are_refused(volunteer, challenge, settings, monkeypatch):
    api = _token_client(volunteer)
    first = api.get(f"/api/v1/photos/{_upload(api, challenge)['id']}/").json()
    display = urlsplit(first["display_url"])
    signature = parse_qs(display.query)["sig"][0]
    thumbnail_path = urlsplit(first["thumbnail_url"]).path

    tampered = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert Client().get(display.path, {"sig": tampered}).status_code == 404
    assert Client().get(display.path, {"sig": ""}).status_code == 404
    assert Client().get(display.path, {"sig": "x" * 5000}).status_code == 404
    # The display copy's signature does not open the thumbnail, nor another photo.
    assert Client().get(thumbnail_path, {"sig": signature}).status_code == 404
    other = _upload(_token_client(UserFactory()), challenge, color=(10, 10, 240))  # another volunteer's pending photo
    assert Client().get(f"/photos/{other['id']}/display", {"sig": signature}).status_code == 404

    assert Client().get(display.path, {"sig": signature}).status_code == 200
    settings.PLATFORM_PHOTO_URL_MAX_AGE = 60
    later = time.time() + 61
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: later))
    assert Client().get(f"{display.path}?{urlencode({'sig': signature})}").status_code == 404


def test_featured_photos_are_public_and_revalidated(volunteer, challenge):
    _upload(_token_client(volunteer), challenge)
    photo = Photo.objects.get()
    Photo.objects.update(status=Photo.Status.APPROVED, featured=True)
    response = Client().get(f"/photos/{photo.public_id}/thumbnail")
    assert response.status_code == 200 and response["Cache-Control"] == "public, no-cache"
    # The full-size copy is private even for its owner's browser.
    owner = Client()
    owner.force_login(volunteer)
    response = owner.get(f"/photos/{photo.public_id}/image")
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"
