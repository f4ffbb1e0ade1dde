"""CSRF: every form that posts carries a token, and every form-handling page refuses a post without one.

The one exemption is the newsletter's one-click unsubscribe (RFC 8058: the mail client posts
without a token; the signed token in the link is the authority, and it can only stop email).
"""
import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework.views import APIView

from newsletter.services import unsubscribe_token_make
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]
POST_FORM = re.compile(r"<form\b[^>]*\bmethod=[\"']?post[\"']?[^>]*>(.*?)</form>", re.IGNORECASE | re.DOTALL)
# Views Django does not check for CSRF (DRF's API views aside: SessionAuthentication checks them).
# The update check authenticates with X-App-Key only and never writes: exempt, so a POST is
# PROTOCOL.md's JSON 405 rather than a CSRF page (issue 15).
CSRF_EXEMPT_VIEWS = {"newsletter-unsubscribe", "mobile-model-update"}


def _template_files():
    return sorted(p for folder in (ROOT / "templates", ROOT / "platform", ROOT / "mobile_api", ROOT / "training")
                  for p in folder.rglob("*.html"))


def test_every_template_form_that_posts_has_a_csrf_token():
    forms = [(path, body) for path in _template_files() for body in POST_FORM.findall(path.read_text())]
    assert len(forms) >= 8  # the scan sees the forms (login, signup, profile, upload, admin actions...)
    missing = [str(path.relative_to(ROOT)) for path, body in forms if "{% csrf_token %}" not in body]
    assert not missing, f"forms posting without {{% csrf_token %}}: {missing}"


@pytest.mark.django_db
def test_every_rendered_form_that_posts_has_a_csrf_token(challenge):
    volunteer = UserFactory(is_staff=True, is_superuser=True)
    browser = Client()
    pages = ["/accounts/login/", "/accounts/signup/", "/admin/login/"]
    rendered = [browser.get(url) for url in pages]
    browser.force_login(volunteer)
    signed_in = ["/", "/me/", f"/newsletter/unsubscribe/{unsubscribe_token_make(user=volunteer)}/", "/admin/"]
    rendered += [browser.get(url) for url in signed_in]

    forms = [(r.request["PATH_INFO"], body) for r in rendered for body in POST_FORM.findall(r.content.decode())]
    assert {path for path, _ in forms} >= {"/accounts/login/", "/accounts/signup/", "/", "/me/", "/admin/login/"}
    missing = [path for path, body in forms if 'name="csrfmiddlewaretoken"' not in body]
    assert not missing, f"rendered forms posting without a CSRF token: {missing}"


@pytest.mark.django_db
@pytest.mark.parametrize("url,signed_in", [
    ("/accounts/login/", False),
    ("/admin/login/", False),
    ("/accounts/signup/", False),
    ("/accounts/logout/", True),
    ("/me/", True),
    ("/challenges/{challenge}/photos/", True),
])
def test_a_form_post_without_the_token_is_refused(url, signed_in, challenge):
    browser = Client(enforce_csrf_checks=True)
    volunteer = UserFactory()
    if signed_in:
        browser.force_login(volunteer)
    data = {"username": volunteer.username, "password": "correct horse battery staple", "display_name": "Someone new",
            "label": "ants"}

    refused = browser.post(url.format(challenge=challenge.pk), data)
    assert refused.status_code == 403
    # With the token from the cookie the same post gets past the check.
    browser.get("/accounts/login/")
    token = browser.cookies["csrftoken"].value
    accepted = browser.post(url.format(challenge=challenge.pk), {**data, "csrfmiddlewaretoken": token})
    assert accepted.status_code != 403


@pytest.mark.django_db
def test_the_session_authenticated_api_refuses_unsafe_methods_without_the_token():
    volunteer = UserFactory()
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(volunteer)  # a browser session, as upload.js uses the API

    assert browser.get("/api/v1/me/").status_code == 200  # safe methods need no token
    refused = browser.patch("/api/v1/me/", {"display_name": "Ant admirer"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied" and "CSRF" in refused.json()["error"]["message"]

    browser.get("/accounts/login/")
    token = browser.cookies["csrftoken"].value
    accepted = browser.patch("/api/v1/me/", {"display_name": "Ant admirer"}, format="json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 200


def test_only_the_one_click_unsubscribe_is_exempt_from_csrf():
    exempt = sorted(name for name, view in _views(get_resolver().url_patterns)
                    if getattr(view, "csrf_exempt", False) and not _is_drf(view))
    assert set(exempt) == CSRF_EXEMPT_VIEWS


def _views(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if str(pattern.pattern) != "admin/":  # the admin's own views are Django's
                yield from _views(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield pattern.name or prefix + str(pattern.pattern), pattern.callback


def _is_drf(view) -> bool:
    cls = getattr(view, "cls", None)
    return isinstance(cls, type) and issubclass(cls, APIView)


@pytest.mark.django_db
def test_the_exempt_unsubscribe_accepts_only_a_signed_token():
    volunteer = UserFactory()
    browser = Client(enforce_csrf_checks=True)
    assert browser.post("/newsletter/unsubscribe/forged-token/").status_code == 404
    assert browser.post(f"/newsletter/unsubscribe/{unsubscribe_token_make(user=volunteer)}/").status_code == 200
