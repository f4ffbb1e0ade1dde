"""Hostile requests to the API get a 4xx (or, at worst, a 500) in the platform's JSON error shape.

Never Django's HTML pages: an app or script reading the API always finds
``{"error": {"code", "message"}}`` (issue 15).
"""
from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import path

from mobile_api.auth import key_generate
from mobile_api.models import AppKey

DEEP = ("[" * 3000 + "]" * 3000).encode()
DEEP_990 = ("[" * 990 + "]" * 990).encode()
DEEP_OBJECT = ('{"a":' * 2000 + "1" + "}" * 2000).encode()
# Brackets inside strings are not nesting: this body is a normal (if odd) login attempt.
BRACKETS_IN_A_STRING = ('{"username": "' + "[" * 5000 + '", "password": "x"}').encode()


def _assert_json_error(response, status: int | tuple[int, ...]) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:200])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


@pytest.fixture
def app_client(db) -> Client:
    key, prefix, digest = key_generate()
    AppKey.objects.create(name="Hostile app", prefix=prefix, key_sha256=digest)
    return Client(HTTP_X_APP_KEY=key)


@pytest.mark.parametrize("body", [DEEP, DEEP_990, DEEP_OBJECT], ids=["depth-3000", "depth-990", "objects-2000"])
def test_deeply_nested_json_is_a_400_everywhere(client, volunteer_api, app_client, project, body):
    anonymous = [("post", "/api/v1/auth/token/"), ("post", "/api/v1/auth/signup/")]
    for method, url in anonymous:
        response = getattr(client, method)(url, body, content_type="application/json")
        assert _assert_json_error(response, 400)["code"] == "parse_error", url
    response = volunteer_api.generic("PATCH", "/api/v1/me/", body, content_type="application/json")
    assert _assert_json_error(response, 400)["code"] == "parse_error"
    response = app_client.post("/api/mobile/v1/models/ants-bees/telemetry", body, content_type="application/json")
    assert _assert_json_error(response, 400)["code"] == "parse_error"


def test_moderate_nesting_and_brackets_in_strings_still_parse(client, volunteer_api, db):
    response = client.post("/api/v1/auth/token/", BRACKETS_IN_A_STRING, content_type="application/json")
    # Parsed: refused as a bad login, not as a malformed body.
    assert response.status_code in (400, 401) and response.json()["error"]["code"] != "parse_error"
    nested = b'{"display_name": [[[[["x"]]]]]}'
    response = volunteer_api.generic("PATCH", "/api/v1/me/", nested, content_type="application/json")
    assert _assert_json_error(response, 400)["code"] != "parse_error"


def test_unknown_api_paths_are_a_json_404_and_pages_keep_html(client, db):
    for url in ("/api/v1/no-such-thing/", "/api/mobile/v1/nope", "/api/", "/api/v2/photos/"):
        assert _assert_json_error(client.get(url), 404)["code"] == "not_found", url
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_an_oversized_body_is_a_json_413(client, volunteer_api, settings, db):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    big = b'{"username": "' + b"a" * (3 * 1024 * 1024) + b'", "password": "x"}'
    response = client.post("/api/v1/auth/token/", big, content_type="application/json")
    assert _assert_json_error(response, 413)["code"] == "too_large"
    form = b"display_name=" + b"a" * (3 * 1024 * 1024)
    response = volunteer_api.generic("PATCH", "/api/v1/me/", form, content_type="application/x-www-form-urlencoded")
    assert _assert_json_error(response, 413)["code"] == "too_large"


def _boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("api/v1/boom/", _boom), path("boom/", _boom)]
# The real URLconf's handlers, with one view that fails.
from config.urls import handler400, handler403, handler404, handler500  # noqa: E402,F401


@override_settings(ROOT_URLCONF=__name__)
def test_the_last_resort_500_is_json_under_api_and_a_page_elsewhere(db):
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/boom/")
    error = _assert_json_error(response, 500)
    assert error["code"] == "server_error" and "a bug" not in response.content.decode()
    page = client.get("/boom/")
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")


def test_a_csrf_refusal_under_api_is_json(db, volunteer):
    # A session-authenticated write without the CSRF token (DRF's SessionAuthentication).
    client = Client(enforce_csrf_checks=True)
    client.force_login(volunteer)
    response = client.generic("PATCH", "/api/v1/me/", b'{"display_name": "Someone"}', content_type="application/json")
    assert _assert_json_error(response, 403)["code"] in ("permission_denied", "csrf_failed")
