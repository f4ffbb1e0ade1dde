"""JSON log lines: each names its request (or task), and none holds a credential."""
from __future__ import annotations

import copy
import io
import json

import pytest
from django.utils.log import configure_logging
from rest_framework.authtoken.models import Token

from mobile_api.services import app_key_create
from training.tasks import photo_score_with_current_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_log(settings):
    """The production logging configuration (PLATFORM_LOG_FORMAT=json), written to a buffer."""
    stream = io.StringIO()
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"] |= {"formatter": "json", "stream": stream}
    configure_logging(settings.LOGGING_CONFIG, config)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def test_every_line_of_a_request_carries_its_id_and_no_credential(client, json_log, volunteer, project):
    token = Token.objects.create(user=volunteer).key
    _, app_key = app_key_create(name="Log test app")
    ok = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {token}")
    # A wrong app key makes Django log a warning about the request itself.
    refused = client.get("/api/mobile/v1/models/ants-bees/update?install_id=install-0001&app_version=1.0"
                         "&platform=ios&formats=onnx&secret=query-value",
                         HTTP_X_APP_KEY=app_key + "x", HTTP_AUTHORIZATION=f"Token {token}")
    assert ok.status_code == 200 and refused.status_code == 401

    lines = json_log()
    for response in (ok, refused):
        mine = [line for line in lines if line.get("request_id") == response["X-Request-ID"]]
        assert {"time", "level", "logger", "message"} <= set(mine[0])
        assert any(line["logger"] == "ops.access" and line["status"] == response.status_code for line in mine)
    assert any(line["logger"] == "django.request" for line in lines), "the 401 warning is logged"
    text = json.dumps(lines)
    for secret in (token, app_key, "query-value", "Authorization", "HTTP_X_APP_KEY"):
        assert secret not in text


def test_a_sane_incoming_request_id_is_kept_and_anything_else_replaced(client):
    from_nginx = "0f3c2b1a9e8d7c6b5a4f3e2d1c0b9a88"
    assert client.get("/healthz", HTTP_X_REQUEST_ID=from_nginx)["X-Request-ID"] == from_nginx
    hostile = client.get("/healthz", HTTP_X_REQUEST_ID='x" injected\tfield')["X-Request-ID"]
    assert hostile != 'x" injected\tfield' and len(hostile) == 32
    assert client.get("/healthz")["X-Request-ID"] != client.get("/healthz")["X-Request-ID"]


def test_an_unsubscribe_token_in_the_path_is_not_logged(client, json_log):
    client.get("/newsletter/unsubscribe/very-secret-token/")
    access = [line for line in json_log() if line["logger"] == "ops.access"]
    assert access and access[-1]["path"] == "/newsletter/unsubscribe/<token>/"
    assert "very-secret-token" not in json.dumps(json_log())


def test_task_lines_carry_the_task_name_and_id(json_log):
    photo_score_with_current_model.delay(10**9)  # eager here; a deleted photo logs and returns
    line = next(line for line in json_log() if line["logger"] == "training.tasks")
    assert line["task_name"] == "training.tasks.photo_score_with_current_model"
    assert line["task_id"] and "request_id" not in line
