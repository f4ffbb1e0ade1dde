"""Rate limits on authentication: failed-login lockout (django-axes) and per-address budgets.

A lockout is per username and client address: five wrong passwords lock that username out
from that address, even for the right password, while other volunteers (and the same one
from elsewhere) still log in. The account endpoints also have per-address budgets (DRF
throttles) that the pages and the API share.
"""
import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
TOKEN_URL = "/api/v1/auth/token/"


def _token_login(client, username, password, **extra):
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", **extra)


def _page_login(client, username, password, url="/accounts/login/"):
    return client.post(url, {"username": username, "password": password})


def test_the_login_page_locks_a_username_out_after_five_failures():
    victim, bystander = UserFactory(), UserFactory()
    browser = Client(REMOTE_ADDR="203.0.113.7")

    for _ in range(4):
        refused = _page_login(browser, victim.username, "wrong guess")
        assert refused.status_code == 200 and "correct username and password" in refused.content.decode()
    locked = _page_login(browser, victim.username, "wrong guess")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode() and int(locked["Retry-After"]) == 15 * 60

    # The right password no longer helps from this address...
    again = _page_login(browser, victim.username, PASSWORD)
    assert again.status_code == 429 and "_auth_user_id" not in browser.session
    # ...while another volunteer on the same network, and the victim elsewhere, still get in.
    assert _page_login(Client(REMOTE_ADDR="203.0.113.7"), bystander.username, PASSWORD).status_code == 302
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert _page_login(elsewhere, victim.username, PASSWORD).status_code == 302
    assert elsewhere.session["_auth_user_id"] == str(victim.pk)


def test_the_admin_login_shares_the_lockout():
    staff = UserFactory(is_staff=True)
    browser = Client(REMOTE_ADDR="203.0.113.8")
    for _ in range(5):
        _page_login(browser, staff.username, "wrong guess", url="/admin/login/")
    assert _page_login(browser, staff.username, PASSWORD, url="/admin/login/").status_code == 429


def test_the_token_api_locks_out_with_the_platform_error_shape():
    victim, bystander = UserFactory(), UserFactory()
    app = APIClient(REMOTE_ADDR="203.0.113.9")

    for _ in range(4):
        refused = _token_login(app, victim.username, "wrong guess")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_credentials"
    locked = _token_login(app, victim.username, "wrong guess")
    assert locked.status_code == 429
    error = locked.json()["error"]
    assert error["code"] == "login_locked_out" and error["message"]
    assert error["retry_after"] == int(locked["Retry-After"]) == 15 * 60

    right_password = _token_login(app, victim.username, PASSWORD)
    assert right_password.status_code == 429 and "token" not in right_password.json()
    assert _token_login(app, bystander.username, PASSWORD).status_code == 200
    assert _token_login(APIClient(REMOTE_ADDR="198.51.100.21"), victim.username, PASSWORD).status_code == 200


def test_a_successful_login_forgets_earlier_failures():
    volunteer = UserFactory()
    app = APIClient(REMOTE_ADDR="203.0.113.10")
    for _ in range(4):
        _token_login(app, volunteer.username, "typo")
    assert _token_login(app, volunteer.username, PASSWORD).status_code == 200
    for _ in range(4):
        _token_login(app, volunteer.username, "typo")
    assert _token_login(app, volunteer.username, PASSWORD).status_code == 200


def test_the_token_api_has_a_per_address_budget_that_forged_headers_do_not_reset(settings):
    settings.PLATFORM_LOGIN_RATE = "3/min"
    volunteer = UserFactory()
    app = APIClient(REMOTE_ADDR="203.0.113.11")
    for n in range(3):
        assert _token_login(app, volunteer.username, PASSWORD, HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code == 200

    throttled = _token_login(app, volunteer.username, PASSWORD, HTTP_X_FORWARDED_FOR="10.0.0.99")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled" and int(throttled["Retry-After"]) > 0
    # The login page counts against the same budget.
    assert _page_login(Client(REMOTE_ADDR="203.0.113.11"), volunteer.username, PASSWORD).status_code == 429
    assert _token_login(APIClient(REMOTE_ADDR="198.51.100.22"), volunteer.username, PASSWORD).status_code == 200


def test_behind_a_proxy_the_forwarded_address_is_the_client(settings):
    settings.PLATFORM_LOGIN_RATE = "1/min"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    volunteer = UserFactory()
    proxy = APIClient(REMOTE_ADDR="127.0.0.1")
    # nginx appends the address it saw; whatever the client wrote before it is ignored.
    assert _token_login(proxy, volunteer.username, PASSWORD, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.12").status_code == 200
    assert _token_login(proxy, volunteer.username, PASSWORD, HTTP_X_FORWARDED_FOR="5.6.7.8, 203.0.113.12").status_code == 429
    assert _token_login(proxy, volunteer.username, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.13").status_code == 200


def test_sign_ups_share_one_budget_per_address_between_page_and_api(settings):
    settings.PLATFORM_SIGNUP_RATE = "2/hour"
    browser, app = Client(REMOTE_ADDR="203.0.113.14"), APIClient(REMOTE_ADDR="203.0.113.14")
    form = {"password1": "a long enough passphrase 7", "password2": "a long enough passphrase 7"}

    assert browser.post("/accounts/signup/", {"username": "first-signup", **form}).status_code == 302
    assert app.post("/api/v1/auth/signup/", {"username": "second-signup", "password": form["password1"]},
                    format="json").status_code == 201
    page = Client(REMOTE_ADDR="203.0.113.14").post("/accounts/signup/", {"username": "third-signup", **form})
    assert page.status_code == 429 and int(page["Retry-After"]) > 0 and "Too many attempts" in page.content.decode()
    api = app.post("/api/v1/auth/signup/", {"username": "fourth-signup", "password": form["password1"]}, format="json")
    assert api.status_code == 429 and api.json()["error"]["code"] == "throttled"
    # Showing the form costs nothing, and another address has its own budget.
    assert browser.get("/accounts/signup/").status_code == 200
    assert Client(REMOTE_ADDR="198.51.100.23").post(
        "/accounts/signup/", {"username": "fifth-signup", **form}).status_code == 302
