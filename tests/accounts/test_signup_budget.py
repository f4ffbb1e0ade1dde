"""Sign-up budget per address: a school behind one address gets in, empty accounts earn nothing.

The base budget (PLATFORM_SIGNUP_RATE) still refuses a burst from one address; every account
from that address that went on to send a photo (not rejected) widens it. A refusal keeps what
was typed, except the password, and says when to try again.
"""
import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Profile
from tests.pages.builders import make_photo

pytestmark = pytest.mark.django_db

SCHOOL = "203.0.113.40"
PASSWORD = "a long enough passphrase 7"
FORM = {"password1": PASSWORD, "password2": PASSWORD}


@pytest.fixture
def small_budget(settings):
    settings.PLATFORM_SIGNUP_RATE = "2/hour"
    settings.PLATFORM_SIGNUP_BONUS_PER_ACTIVE = 2
    settings.PLATFORM_SIGNUP_BONUS_MAX = 3


def _page_signup(username, address=SCHOOL, email=""):
    return Client(REMOTE_ADDR=address).post("/accounts/signup/", {"username": username, "email": email, **FORM})


def _api_signup(username, address=SCHOOL):
    return APIClient(REMOTE_ADDR=address).post(
        "/api/v1/auth/signup/", {"username": username, "password": PASSWORD}, format="json"
    )


def test_the_account_remembers_the_address_it_signed_up_from(small_budget):
    assert _page_signup("pupil-1").status_code == 302
    assert _api_signup("pupil-2").status_code == 201
    assert set(Profile.objects.values_list("signup_address", flat=True)) == {SCHOOL}


def test_accounts_that_send_photos_widen_their_address_budget_and_empty_ones_do_not(small_budget, project):
    assert _page_signup("pupil-1").status_code == 302
    assert _page_signup("pupil-2").status_code == 302
    assert _page_signup("pupil-3").status_code == 429  # the base budget, as before
    # An empty account or a rejected photo is no activity.
    make_photo(project=project, volunteer=Profile.objects.get(user__username="pupil-2").user, status="rejected")
    assert _api_signup("pupil-3").status_code == 429
    # One pupil sends a photo (and had one rejected): two more pupils get in, then the budget is spent again.
    make_photo(project=project, volunteer=Profile.objects.get(user__username="pupil-1").user, status="rejected")
    make_photo(project=project, volunteer=Profile.objects.get(user__username="pupil-1").user)
    assert _page_signup("pupil-3").status_code == 302
    assert _api_signup("pupil-4").status_code == 201
    assert _api_signup("pupil-5").status_code == 429
    # Another address's active accounts do not widen this one.
    assert _page_signup("elsewhere-1", address="198.51.100.7").status_code == 302


def test_the_bonus_is_capped(small_budget, project):
    for n in range(2):
        assert _api_signup(f"pupil-{n}").status_code == 201
    for profile in Profile.objects.all():
        make_photo(project=project, volunteer=profile.user)
    # 2 active accounts x 2 = 4, capped at 3: base 2 + 3 = 5 sign-ups in the hour.
    assert [_api_signup(f"next-{n}").status_code for n in range(4)] == [201, 201, 201, 429]


def test_a_refused_page_keeps_what_was_typed_and_says_when_to_try_again(small_budget):
    _page_signup("pupil-1")
    _page_signup("pupil-2")
    refused = _page_signup("pupil-3", email="pupil3@school.example")
    page = refused.content.decode()
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert 'value="pupil-3"' in page and 'value="pupil3@school.example"' in page
    assert PASSWORD not in page
    assert "try again in about" in page and "minute" in page
    assert not Profile.objects.filter(user__username="pupil-3").exists()


def test_a_refused_api_call_says_when_to_try_again_in_plain_words(small_budget):
    _api_signup("pupil-1")
    _api_signup("pupil-2")
    refused = _api_signup("pupil-3")
    error = refused.json()["error"]
    assert refused.status_code == 429 and error["code"] == "throttled" and error["retry_after"] > 0
    assert "try again in about" in error["message"]
