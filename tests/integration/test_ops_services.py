"""Readiness and queue depths against the real PostgreSQL, Redis and S3 (radosgw)."""
from __future__ import annotations

import time

import pytest
import redis
from django.db import connection

from config.celery import app
from ops.selectors import CHECK_TIMEOUT, broker_queue_depths

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_broker(services, monkeypatch):
    """The platform's Celery app on a Redis database of this test's own (the end-to-end test uses 0)."""
    url = services.redis_url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setitem(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    yield url
    redis.Redis.from_url(url).flushdb()


def test_ready_on_postgresql_redis_and_s3(client, s3_storage, redis_broker):
    assert connection.vendor == "postgresql"
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert all(check["ok"] for check in response.json()["checks"].values())


def test_queue_depths_on_redis(redis_broker):
    assert broker_queue_depths() == {"light": 0, "training": 0}
    with app.connection_for_write() as conn:
        for photo_id in (1, 2, 3):
            app.send_task("training.tasks.photo_score_with_current_model", args=[photo_id], connection=conn)
        for project_id in (1, 2):
            app.send_task("training.tasks.training_run_nightly", args=[project_id, "2026-01-01"], connection=conn)
    assert broker_queue_depths() == {"light": 3, "training": 2}


@pytest.mark.slow
def test_a_stopped_server_fails_its_check_within_the_timeout(client, services, s3_storage, redis_broker):
    """No hang behind botocore's retries or kombu's reconnects: the probe answers in seconds (~20 s)."""
    for server, check in (("s3", "storage"), ("redis", "broker")):
        services.control(f"stop-{server}")
        try:
            started = time.monotonic()
            response = client.get("/readyz")
            elapsed = time.monotonic() - started
        finally:
            services.control(f"start-{server}")
        assert response.status_code == 503, response.content
        checks = response.json()["checks"]
        assert not checks[check]["ok"] and checks[check]["error"]
        assert all(result["ok"] for name, result in checks.items() if name != check)
        assert elapsed < 2 * CHECK_TIMEOUT + 1, f"{server} down: readyz took {elapsed:.1f}s"
    assert client.get("/readyz").status_code == 200
