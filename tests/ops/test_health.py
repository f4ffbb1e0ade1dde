"""Liveness and readiness probes: anonymous, cheap, and honest about which dependency failed."""
from __future__ import annotations

import socket

import pytest

from config.celery import app

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-store" in response["Cache-Control"]


def test_readyz_is_ready_on_the_embedded_default(client, tmp_broker):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "storage"}
    assert all(check["ok"] and check["ms"] >= 0 for check in body["checks"].values())
    assert "Retry-After" not in response


def test_readyz_names_an_unreachable_broker_without_its_url(client, monkeypatch):
    url = f"redis://:broker-password@127.0.0.1:{_closed_port()}/0"
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setitem(app.conf, "broker_url", url)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False and checks["broker"]["error"]
    assert checks["broker"]["ms"] < 3000
    assert checks["database"]["ok"] and checks["storage"]["ok"]
    assert b"broker-password" not in response.content and b"127.0.0.1" not in response.content


def test_readyz_names_a_storage_folder_that_cannot_be_made(client, settings, tmp_path, tmp_broker):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                    "OPTIONS": {"location": str(blocker / "media")}},
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["storage"] == {"ok": False, "error": "StorageNotWritable", "ms": checks["storage"]["ms"]}
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert str(tmp_path).encode() not in response.content


def test_probes_refuse_writes(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405
