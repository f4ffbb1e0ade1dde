"""Distribution on a real light worker: a publish's event queues the task through Redis.

The publishing side runs in this process (the event is sent as ``model_version_publish`` sends
it after its commit); ``mobile_api.tasks.version_distribute`` runs in a real ``celery worker
--queues light`` (deploy/'s command), on the test database, Redis and radosgw.
"""
from __future__ import annotations

import time

import pytest

from mobile_api.models import VersionDistribution
from tests.integration.workers import Processes, process_env
from tests.moderation.test_scoring import publish, red_blue_classifier
from training.publishing import version_published_send

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def light_worker(services, s3_storage, s3_prefix, tmp_path):
    """A real light worker; this process sends its tasks through the test Redis (not eagerly)."""
    from config.celery import app

    processes = Processes(env=process_env(services, s3_prefix=s3_prefix, var_dir=tmp_path / "var"), log_dir=tmp_path)
    saved = {key: app.conf[key] for key in ("broker_url", "task_always_eager")}
    app.conf.update(broker_url=services.redis_url, task_always_eager=False)
    app._pool = app.amqp._producer_pool = None  # connections made for another broker, if any
    try:
        yield processes.worker("light", queues="light")
    finally:
        app.conf.update(saved)
        app._pool = app.amqp._producer_pool = None
        processes.stop_all()


def _distribution(version, *, done: bool, timeout: float) -> VersionDistribution:
    deadline = time.monotonic() + timeout
    while True:
        found = VersionDistribution.objects.filter(version=version).first()
        if found is not None and (found.status == "done") == done and found.status != "pending":
            return found
        assert time.monotonic() < deadline, f"distribution of {version}: {found and (found.status, found.error)}"
        time.sleep(0.3)


def test_the_light_worker_distributes_a_published_version(services, light_worker, project, s3_prefix):
    version = publish(project, 1, red_blue_classifier())
    version_published_send(version=version)  # what model_version_publish does after its commit

    distribution = _distribution(version, done=True, timeout=90)
    assert (distribution.channels, distribution.attempts, distribution.error) == (["beta", "stable"], 1, "")
    assert "mobile_api.tasks.version_distribute" in light_worker.log()
    for channel in ("stable", "beta"):  # the worker wrote each channel's static manifest to S3
        stored = services.boto3_client().get_object(Bucket=services.s3_bucket,
                                                    Key=f"{s3_prefix}/manifests/ants-bees/{channel}.json")
        assert b'"version": 1' in stored["Body"].read()
