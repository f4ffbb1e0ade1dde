"""Production settings: `check --deploy` passes, and the responses carry what it promises.

The settings module is loaded in a subprocess with a production environment (no pytest in
it, so no test defaults), and the in-process tests apply the security settings it produced.
"""
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]
SECURITY_SETTINGS = (
    "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY", "X_FRAME_OPTIONS",
)


def _environment(tmp_path, **overrides) -> dict:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
        "PLATFORM_ENV_FILE": "",  # a developer's .env must not decide the outcome
        "PLATFORM_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


PRODUCTION = {"DJANGO_ALLOWED_HOSTS": "platform.example.org", "PLATFORM_HTTPS": "1"}


def _settings_in(env: dict) -> dict:
    """The security settings the settings module computes in this environment."""
    code = (
        "import json, config.settings as s; "
        f"print(json.dumps({{name: getattr(s, name) for name in {SECURITY_SETTINGS!r}}}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_manage_py_check_deploy_passes_in_production(tmp_path):
    """About 6 s: Django's deploy checklist, drf-spectacular's schema check, django-axes' checks."""
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=_environment(tmp_path, **PRODUCTION), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_the_embedded_default_stays_on_plain_http(tmp_path):
    """scripts/run serves http://127.0.0.1:8000 with DEBUG off: no redirect, cookies, HSTS that need HTTPS."""
    embedded = _settings_in(_environment(tmp_path))
    assert embedded["SECURE_SSL_REDIRECT"] is False and embedded["SECURE_PROXY_SSL_HEADER"] is None
    assert embedded["SESSION_COOKIE_SECURE"] is False and embedded["CSRF_COOKIE_SECURE"] is False
    assert embedded["SECURE_HSTS_SECONDS"] == 0
    # What needs no HTTPS is on everywhere.
    assert embedded["SESSION_COOKIE_HTTPONLY"] and embedded["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert embedded["X_FRAME_OPTIONS"] == "DENY"


@pytest.fixture(scope="module")
def production_settings(tmp_path_factory) -> dict:
    return _settings_in(_environment(tmp_path_factory.mktemp("production"), **PRODUCTION))


@pytest.fixture
def production(settings, production_settings):
    """This process with the security settings the production environment gives."""
    for name, value in production_settings.items():
        setattr(settings, name, tuple(value) if isinstance(value, list) else value)
    settings.ALLOWED_HOSTS = ["platform.example.org"]
    return Client(HTTP_HOST="platform.example.org")


def test_production_redirects_plain_http_to_https(production):
    response = production.get("/accounts/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://platform.example.org/accounts/login/"


@pytest.mark.django_db
def test_production_responses_carry_the_security_headers(production):
    response = production.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_production_session_and_csrf_cookies_are_secure(production):
    user = UserFactory()
    form = production.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    csrf = form.cookies["csrftoken"]
    assert csrf["secure"] and csrf["samesite"] == "Lax"

    logged_in = production.post(
        "/accounts/login/", {"username": user.username, "password": "correct horse battery staple"},
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert logged_in.status_code == 302
    session = logged_in.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
