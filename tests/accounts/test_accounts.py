"""Volunteer sign-up and token login (API), session login (web)."""
import pytest

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase 42"


def test_signup_then_token_login_then_authenticated_call(api):
    created = api.post("/api/v1/auth/signup/", {"username": "ada", "password": PASSWORD}, format="json")
    assert created.status_code == 201
    token = created.json()["token"]

    login = api.post("/api/v1/auth/token/", {"username": "ada", "password": PASSWORD}, format="json")
    assert login.status_code == 200 and login.json()["token"] == token

    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/photos/").status_code == 200


def test_signup_refuses_weak_passwords_and_taken_names(api):
    weak = api.post("/api/v1/auth/signup/", {"username": "bob", "password": "123"}, format="json")
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
    api.post("/api/v1/auth/signup/", {"username": "bob", "password": PASSWORD}, format="json")
    taken = api.post("/api/v1/auth/signup/", {"username": "bob", "password": PASSWORD}, format="json")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "username_taken"


def test_wrong_password_gives_no_token(api, volunteer):
    response = api.post("/api/v1/auth/token/", {"username": volunteer.username, "password": "nope"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_credentials"


def test_new_volunteers_are_not_staff(api):
    from django.contrib.auth import get_user_model

    api.post("/api/v1/auth/signup/", {"username": "eve", "password": PASSWORD, "email": "e@x.org"}, format="json")
    user = get_user_model().objects.get(username="eve")
    assert not user.is_staff and not user.is_superuser


def test_web_signup_login_and_upload_page(client, challenge):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from submissions.models import Photo
    from tests.conftest import jpeg_bytes

    signup = client.post(
        "/accounts/signup/", {"username": "web", "password1": PASSWORD, "password2": PASSWORD}, follow=True
    )
    assert signup.status_code == 200 and b"Send photo" in signup.content
    client.post("/accounts/logout/")
    assert b"Send photo" not in client.get("/").content

    login = client.post("/accounts/login/", {"username": "web", "password": PASSWORD}, follow=True)
    assert b"Send photo" in login.content
    page = client.post(
        f"/challenges/{challenge.pk}/photos/",
        {"label": "ants", "image": SimpleUploadedFile("a.jpg", jpeg_bytes(), "image/jpeg")},
        follow=True,
    )
    assert b"your points arrive when it is approved" in page.content
    assert Photo.objects.get().volunteer.username == "web"
    assert b"my-photos" in page.content
