"""Public profiles: generated display names, /me/ API and page, privacy validation."""
import pytest

from accounts.models import Profile

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase 42"


def test_signup_creates_a_profile_with_a_generated_name_and_defaults(api):
    api.post("/api/v1/auth/signup/", {"username": "ada.lovelace", "password": PASSWORD, "email": "ada@x.org"},
             format="json")
    profile = Profile.objects.get(user__username="ada.lovelace")
    assert profile.display_name.startswith("Volunteer ") and "ada" not in profile.display_name.lower()
    assert profile.public_on_leaderboards is True and profile.newsletter_opt_in is False


def test_me_get_and_patch(volunteer_api, volunteer):
    me = volunteer_api.get("/api/v1/me/").json()
    assert set(me) == {"display_name", "public_on_leaderboards", "newsletter_opt_in"}
    response = volunteer_api.patch(
        "/api/v1/me/", {"display_name": "  Bee   Friend ", "newsletter_opt_in": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {"display_name": "Bee Friend", "public_on_leaderboards": True, "newsletter_opt_in": True}
    volunteer_api.patch("/api/v1/me/", {"public_on_leaderboards": False}, format="json")
    volunteer.profile.refresh_from_db()
    assert (volunteer.profile.display_name, volunteer.profile.public_on_leaderboards) == ("Bee Friend", False)


@pytest.mark.parametrize(
    ("name", "code"),
    [("ab", "invalid_display_name"), ("x" * 41, "invalid_display_name"), ("me@example.org", "invalid_display_name"),
     ("ada.example.com", "invalid_display_name"), ("<script>", "invalid_display_name")],
)
def test_me_refuses_bad_display_names(volunteer_api, name, code):
    response = volunteer_api.patch("/api/v1/me/", {"display_name": name}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_me_refuses_taken_names_and_the_username(volunteer_api, volunteer):
    from accounts.services import profile_update
    from tests.factories import UserFactory

    profile_update(user=UserFactory(), display_name="Taken Name")
    for name in ("taken name", volunteer.username):
        response = volunteer_api.patch("/api/v1/me/", {"display_name": name}, format="json")
        assert response.status_code == 409 and response.json()["error"]["code"] == "display_name_taken"


def test_me_needs_login(api, client):
    assert api.get("/api/v1/me/").status_code in (401, 403)
    assert client.get("/me/").status_code == 302


def test_profile_page_form_with_csrf(volunteer):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(volunteer)
    page = client.get("/me/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    token = page.cookies["csrftoken"].value
    assert client.post("/me/", {"display_name": "Web Name"}).status_code == 403  # no token
    saved = client.post(
        "/me/", {"display_name": "Web Name", "newsletter_opt_in": "on", "csrfmiddlewaretoken": token}, follow=True
    )
    assert saved.status_code == 200 and b"Profile saved." in saved.content
    volunteer.profile.refresh_from_db()
    assert volunteer.profile.display_name == "Web Name"
    assert volunteer.profile.newsletter_opt_in and not volunteer.profile.public_on_leaderboards
    bad = client.post("/me/", {"display_name": "me@x.org", "csrfmiddlewaretoken": token})
    assert bad.status_code == 200 and b"aria-invalid" in bad.content
