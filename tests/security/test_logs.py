"""No secret reaches the logs: passwords, API tokens, app keys, S3 credentials, presigned URLs.

Every logger is read at DEBUG (the root logger; the levels that LOGGING pins on purpose stay),
and each record is checked as pytest formats it, as every handler configured on the root
logger formats it (plain text or JSON), and with its extra fields.
"""
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from rest_framework.test import APIClient

from mobile_api.services import app_key_create, app_key_revoke
from tests.factories import UserFactory
from tests.mobile_api.test_manifest import publish

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "an incorrect horse, battery-stapled"
AWS_SECRET = "s3-secret-key-that-must-never-be-logged-0123456789"


def _everything_logged(caplog) -> str:
    handlers = [h for h in logging.getLogger().handlers if h not in (caplog.handler,)]
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.extend(handler.format(record) for handler in handlers if handler.formatter is not None)
        parts.extend(repr(value) for value in vars(record).values())
    return "\n".join(parts)


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")
    return caplog


def test_logins_tokens_and_app_keys_stay_out_of_the_logs(all_logs, project):
    volunteer = UserFactory()
    browser = Client(REMOTE_ADDR="203.0.113.30")
    browser.post("/accounts/login/", {"username": volunteer.username, "password": WRONG_PASSWORD})
    browser.post("/accounts/login/", {"username": volunteer.username, "password": PASSWORD})
    signup_password = "another long passphrase 8"
    APIClient().post("/api/v1/auth/signup/", {"username": "logged-newcomer", "password": signup_password}, format="json")

    app = APIClient(REMOTE_ADDR="203.0.113.31")
    app.post("/api/v1/auth/token/", {"username": volunteer.username, "password": WRONG_PASSWORD}, format="json")
    token = app.post("/api/v1/auth/token/", {"username": volunteer.username, "password": PASSWORD},
                     format="json").json()["token"]
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {token[::-1]}")  # a wrong token: 401, logged

    publish(project, 1, b"model bytes")
    _, app_key = app_key_create(name="Logged app")
    revoked_row, revoked_key = app_key_create(name="Revoked app")
    app_key_revoke(app_key=revoked_row)
    for key in (app_key, revoked_key):
        APIClient().get("/api/mobile/v1/models/ants-bees/update?install_id=install-0001&app_version=1.0"
                        "&platform=ios&formats=onnx", HTTP_X_APP_KEY=key)
        APIClient().get("/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32", HTTP_X_APP_KEY=key)

    logged = _everything_logged(all_logs)
    assert all_logs.records, "nothing was logged: the test would prove nothing"
    for secret in (PASSWORD, WRONG_PASSWORD, signup_password, token, token[::-1], app_key, revoked_key):
        assert secret not in logged


def test_s3_credentials_and_presigned_urls_stay_out_of_the_logs(all_logs, settings, project):
    publish(project, 1, b"model bytes")  # on local storage; the download below only presigns
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": "platform", "endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1",
                    "access_key": "LOGTESTACCESSKEY", "secret_key": AWS_SECRET, "signature_version": "s3v4",
                    "addressing_style": "path", "querystring_auth": True, "querystring_expire": 900},
    }}
    _, app_key = app_key_create(name="Logged app")

    response = APIClient().get("/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32", HTTP_X_APP_KEY=app_key)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response["Location"]).query)
    signature, credential = query["X-Amz-Signature"][0], query["X-Amz-Credential"][0]

    logged = _everything_logged(all_logs)
    assert "LOGTESTACCESSKEY" in credential  # the URL is what the app needs, and it is presigned
    for secret in (AWS_SECRET, signature, response["Location"], app_key):
        assert secret not in logged
