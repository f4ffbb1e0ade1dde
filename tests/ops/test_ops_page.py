"""The admin's operations page: queues, workers, nightly runs, releases, readiness."""
from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from mobile_api.services import channel_create, release_promote
from ops.selectors import broker_queue_depths, queue_names
from tests.factories import UserFactory
from tests.mobile_api.test_manifest import publish
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_queue_depths_count_what_waits_on_the_filesystem_broker(enqueue):
    assert broker_queue_depths() == {"light": 0, "training": 0}
    enqueue("submissions.tasks.photo_score_with_current_model", 1)
    enqueue("submissions.tasks.photo_score_with_current_model", 2)
    enqueue("training.tasks.training_run_nightly", 1, "2026-01-01")  # routed to "training"
    assert broker_queue_depths() == {"light": 2, "training": 1}


def test_staff_see_the_figures_of_real_rows(client, project, enqueue):
    enqueue("submissions.tasks.photo_score_with_current_model", 1)
    TrainingRun.objects.create(project=project, night=dt.date(2026, 3, 1), trigger=TrainingRun.Trigger.NIGHTLY,
                               status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now())
    TrainingRun.objects.create(project=project, night=dt.date(2026, 3, 2), trigger=TrainingRun.Trigger.NIGHTLY,
                               status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
                               worker="gpu-box:4242", message="CUDA out of patience")
    publish(project, 1, b"model one")
    publish(project, 2, b"model two")
    beta = channel_create(project=project, name="beta-testers")
    release_promote(channel=beta, version=project.model_versions.get(version=1))
    release_promote(channel=beta, version=project.model_versions.get(version=2), rollout_percent=35)
    client.force_login(UserFactory(is_staff=True))

    response = client.get("/admin/ops/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "2026-03-02" in page and "CUDA out of patience" in page and "gpu-box:4242" in page
    assert "2026-03-01" not in page  # only the last nightly run per project
    assert "beta-testers" in page and "35%" in page
    broker = response.context["broker"]
    assert broker["error"] is None and broker["workers"] == []  # no worker runs in this test
    assert {queue["name"]: queue["depth"] for queue in broker["queues"]} == {"light": 1, "training": 0}
    assert [row["run"].message for row in response.context["nightly"]] == ["CUDA out of patience"]
    assert {(r.version.version, r.rollout_percent) for r in response.context["releases"]} >= {(2, 35)}
    assert set(response.context["checks"]) == {"database", "broker", "storage"}


def test_the_admin_index_links_to_the_page(client):
    client.force_login(UserFactory(is_staff=True))
    assert 'href="/admin/ops/"' in client.get("/admin/").content.decode()


@pytest.mark.parametrize("user", [None, "volunteer"])
def test_others_are_sent_to_the_login(client, user):
    if user:
        client.force_login(UserFactory())
    response = client.get("/admin/ops/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_queues_are_the_default_and_the_routed_ones():
    assert queue_names() == ["light", "training"]
