"""Caching and Content-Security-Policy headers (issue 15).

Private API answers and private photo copies are never stored by a browser or proxy (a
shared computer must not keep a volunteer's photos or profile); every page carries a strict
Content-Security-Policy (no inline script) under which the pages, Django's admin and Swagger
UI still work: none of them holds an inline script or event handler.
"""
from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from common.middleware import content_security_policy
from tests.factories import UserFactory

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)


@pytest.mark.django_db
def test_private_api_answers_are_never_stored(volunteer_api, staff_api):
    for client, url in ((volunteer_api, "/api/v1/me/"), (volunteer_api, "/api/v1/photos/"),
                        (staff_api, "/api/v1/moderation/photos/")):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Cache-Control"] == "private, no-store", url
    # Answers that set their own rule keep it (errors included: no-store as well).
    assert Client().get("/api/v1/nope/")["Cache-Control"] == "no-store"


def _assert_csp_compatible(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "unsafe-eval" not in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    html = response.content.decode()
    assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html).group(0))
    assert not EVENT_HANDLER.search(html), (url, EVENT_HANDLER.search(html).group(0))
    for src in SCRIPT_SRC.findall(html):  # every script is served from here, so 'self' allows it
        assert src.startswith("/"), (url, src)
        if src.startswith("/static/"):  # whitenoise serves collected files; here: the file exists
            assert finders.find(src.removeprefix("/static/").split("?", 1)[0]), src
        else:
            assert client.get(src).status_code == 200, src
    return html


@pytest.mark.django_db
def test_pages_admin_and_swagger_ui_run_under_the_policy(client, volunteer, challenge):
    for url in ("/", "/gallery/", "/accounts/login/", "/accounts/signup/"):
        _assert_csp_compatible(client, url)
    client.force_login(volunteer)
    for url in ("/", "/me/", "/me/photos/"):
        _assert_csp_compatible(client, url)
    admin_client = Client()
    admin_client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for url in ("/admin/", "/admin/submissions/photo/", "/admin/challenges/challenge/calendar/",
                "/admin/challenges/project/", "/admin/ops/"):
        _assert_csp_compatible(admin_client, url)
    html = _assert_csp_compatible(client, "/api/docs/")
    # Swagger UI's set-up script is a file of its own (drf-spectacular's split view).
    setup = [src for src in SCRIPT_SRC.findall(html) if "script" in src.split("?", 1)[-1]]
    assert setup and client.get(setup[0])["Content-Type"].startswith("application/javascript")


def test_the_policy_lets_images_come_from_the_object_store_only_with_s3():
    assert "img-src 'self' data: blob:;" in content_security_policy(storage_origin=None)
    assert "img-src 'self' data: blob: http://127.0.0.1:9000;" in content_security_policy(
        storage_origin="http://127.0.0.1:9000"
    )
