"""After a publish: training sends one event; mobile_api distributes in its own task, with its record.

Real commits (``transaction=True``): the event is sent when the publish commits. Celery runs
eagerly in unit tests (tests/conftest.py), so the queued ``mobile_api.tasks.version_distribute``
runs in-process as its one attempt (nothing would retry it later); the retries' path is
tested through the service, and the integration tests run the task on a real light worker.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from types import SimpleNamespace

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction

from common.errors import DATABASE_ERRORS
from mobile_api import services, tasks
from mobile_api.models import Channel, Release, VersionDistribution
from tests.mobile_api.test_releases import _fresh_memos  # noqa: F401  (fixture)
from training.ml.config import Preprocessing
from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.publishing import model_version_publish, version_published_send
from training.signals import version_published

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(project, tmp_path, *, payload: bytes = b"onnx bytes" * 40) -> ModelVersion:
    """model_version_publish with the smallest result and compression it accepts (one ONNX file)."""
    path = tmp_path / f"model-{len(payload)}.onnx"
    path.write_bytes(payload)
    night = dt.date(2026, 1, 1) + dt.timedelta(days=TrainingRun.objects.count())
    run = TrainingRun.objects.create(project=project, night=night, trigger="manual", status="succeeded")
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project, manifest_sha256="1" * 64, defaults={"manifest": {}, "label_counts": {}, "photo_count": 0}
    )
    result = SimpleNamespace(labels=["ants", "bees"], preprocessing=Preprocessing(),
                             metrics=SimpleNamespace(to_dict=lambda: {"accuracy": 0.9}))
    artifact = SimpleNamespace(
        path=path, variant="fp32", extension="onnx", format="onnx", precision="fp32", recommended=True,
        sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), preprocessing={}, companions=(),
        measurements={},
    )
    compression = SimpleNamespace(card={}, artifacts=[artifact])
    return model_version_publish(run=run, snapshot=snapshot, result=result, compression=compression)


@pytest.fixture
def heard():
    """The versions a second receiver of ``version_published`` was told about."""
    versions = []

    def receive(sender, *, version, **kwargs):
        versions.append(version.version)

    version_published.connect(receive, dispatch_uid="test-heard")
    yield versions
    version_published.disconnect(dispatch_uid="test-heard")


def test_a_publish_sends_one_event_after_its_commit_and_none_when_it_rolls_back(project, tmp_path, heard):
    with transaction.atomic():
        version = _publish(project, tmp_path)
        assert heard == [] and not VersionDistribution.objects.exists()  # not before the commit
    assert heard == [1]
    distribution = VersionDistribution.objects.get(version=version)
    assert (distribution.status, distribution.attempts, distribution.channels) == ("done", 1, ["beta", "stable"])
    assert distribution.finished_at is not None and distribution.error == ""

    with pytest.raises(RuntimeError), transaction.atomic():
        _publish(project, tmp_path, payload=b"never committed" * 10)
        raise RuntimeError("the outer transaction fails")
    assert heard == [1] and ModelVersion.objects.count() == 1 == VersionDistribution.objects.count()


def test_a_failing_distribution_is_recorded_and_never_unpublishes(project, make_version, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("a bug in channel defaults")

    monkeypatch.setattr(services, "channel_defaults_ensure", broken)
    version = make_version(project, 1)

    version_published_send(version=version)  # logs; raises nothing into the publisher

    distribution = VersionDistribution.objects.get(version=version)
    assert distribution.status == "failed" and distribution.attempts == 1  # not transient: no retry
    assert distribution.error == "RuntimeError: a bug in channel defaults"
    assert ModelVersion.objects.filter(pk=version.pk).exists() and not Release.objects.exists()
    assert "distributing" in caplog.text


def test_a_transient_storage_error_is_retried_and_the_retry_finishes_the_job(project, make_version, monkeypatch):
    """On a worker: the attempt raises for Celery's autoretry (backoff), the next one finishes the job."""
    real, calls = services.channel_publish, []

    def flaky(*, channel_id):
        calls.append(channel_id)
        if len(calls) == 1:
            raise OSError("storage unreachable")
        return real(channel_id=channel_id)

    services.channel_create(project=project, name="stable", auto_promote=False)  # published first: fails once
    services.channel_create(project=project, name="beta", auto_promote=True)
    monkeypatch.setattr(services, "channel_publish", flaky)
    distribution = services.version_distribution_pending(version=make_version(project, 1))

    with pytest.raises(services.DistributionInterrupted):
        services.version_distribution_run(distribution=distribution, final_attempt=False)
    distribution.refresh_from_db()
    assert (distribution.status, distribution.error) == ("retrying", "OSError: storage unreachable")
    assert tasks.version_distribute.autoretry_for == (services.DistributionInterrupted, *DATABASE_ERRORS)

    services.version_distribution_run(distribution=distribution, final_attempt=False)
    distribution.refresh_from_db()
    assert (distribution.status, distribution.attempts, distribution.error) == ("done", 2, "")
    assert distribution.channels == ["beta"]
    assert list(Release.objects.values_list("channel__name", flat=True)) == ["beta"]


def test_a_transient_error_on_the_last_attempt_ends_failed(project, make_version, monkeypatch):
    """The final attempt, or any attempt run in-process (eager: nothing retries later), records the failure."""
    def down(**kwargs):
        raise OSError("storage unreachable")

    monkeypatch.setattr(services, "channel_defaults_ensure", down)
    version_published_send(version=make_version(project, 1))  # eager in tests

    distribution = VersionDistribution.objects.get()
    assert (distribution.status, distribution.attempts) == ("failed", 1)
    assert distribution.error == "OSError: storage unreachable" and distribution.finished_at is not None


def test_a_broker_that_refuses_the_task_leaves_a_failed_record_for_staff(project, make_version, monkeypatch):
    from kombu.exceptions import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(tasks.version_distribute, "delay", refuse)
    version = make_version(project, 1)
    version_published_send(version=version)

    distribution = VersionDistribution.objects.get()
    assert distribution.status == "failed" and distribution.attempts == 0
    assert distribution.error.startswith("could not be queued: OperationalError")
    assert ModelVersion.objects.filter(pk=version.pk).exists()


def test_staff_see_a_failed_distribution_and_distribute_again_without_undoing_a_rollback(
    project, make_version, monkeypatch, admin_client
):
    v1 = make_version(project, 1)
    version_published_send(version=v1)
    stable = Channel.objects.get(project=project, name="stable")
    services.release_rollback(release=Release.objects.get(channel=stable), reason="crashes on old phones")
    beta = Channel.objects.get(project=project, name="beta")
    monkeypatch.setattr(services, "channel_defaults_ensure", lambda **kwargs: 1 / 0)
    version_published_send(version=make_version(project, 2))
    failed = VersionDistribution.objects.get(version__version=2)
    assert failed.status == "failed"

    page = admin_client.get("/admin/ops/").content.decode()
    assert "Distributions not done" in page and "ZeroDivisionError" in page
    listing = admin_client.get("/admin/mobile_api/versiondistribution/?status=failed").content.decode()
    assert "ZeroDivisionError" in listing

    monkeypatch.undo()  # the cause is fixed
    response = admin_client.post("/admin/mobile_api/versiondistribution/", {
        "action": "distribute_again", ACTION_CHECKBOX_NAME: [failed.pk, VersionDistribution.objects.get(version=v1).pk],
    }, follow=True)
    assert response.status_code == 200
    assert set(VersionDistribution.objects.values_list("status", flat=True)) == {"done"}
    # v2 reached both channels; v1 was not released again on stable, where staff rolled it back.
    assert Release.objects.filter(channel=stable, version=v1).get().state == "rolled_back"
    assert Release.objects.filter(version__version=2, channel__in=[stable, beta]).count() == 2
    assert "Every published version was distributed." in admin_client.get("/admin/ops/").content.decode()
