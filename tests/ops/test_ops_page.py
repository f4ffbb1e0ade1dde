"""The admin's operations page: queues, workers, nightly runs, releases, readiness."""
from __future__ import annotations

import datetime as dt
import re

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
    enqueue("training.tasks.photo_score_with_current_model", 1)
    enqueue("training.tasks.photo_score_with_current_model", 2)
    enqueue("training.tasks.training_run_nightly", 1, "2026-01-01")  # routed to "training"
    assert broker_queue_depths() == {"light": 2, "training": 1}


def test_staff_see_the_figures_of_real_rows(client, project, enqueue):
    enqueue("training.tasks.photo_score_with_current_model", 1)
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


# --- backlog states and their colours ----------------------------------------------------------


def _contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _queue_row(page: str, name: str) -> str:
    return re.search(rf'<tr class="(ops-[a-z]+)" id="ops-queue-{name}">', page).group(1)


@pytest.mark.parametrize(("waiting", "level"), [(0, "ok"), (3, "warning"), (6, "critical")])
def test_a_growing_queue_turns_warning_then_critical(client, enqueue, settings, waiting, level):
    settings.PLATFORM_OPS_QUEUE_WARNING, settings.PLATFORM_OPS_QUEUE_CRITICAL = 3, 6
    for photo in range(waiting):
        enqueue("training.tasks.photo_score_with_current_model", photo)
    client.force_login(UserFactory(is_staff=True))

    page = client.get("/admin/ops/").content.decode()

    assert _queue_row(page, "light") == f"ops-{level}"
    assert _queue_row(page, "training") == "ops-ok"
    assert "critical from 6" in page  # the thresholds are written next to the table


def test_an_old_pending_follow_up_colours_the_light_queue_by_its_age(client, enqueue, settings, project):
    from submissions.models import Photo
    from tests.training.conftest import make_photo

    settings.PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS = 120
    photo = make_photo(project=project, label="ants")
    client.force_login(UserFactory(is_staff=True))
    for age, level in ((0, "ok"), (130, "warning"), (1300, "critical")):
        Photo.objects.filter(pk=photo.pk).update(followups_pending=True,
                                                 updated_at=timezone.now() - dt.timedelta(seconds=age))
        response = client.get("/admin/ops/")
        (light,) = [q for q in response.context["broker"]["queues"] if q["name"] == "light"]
        assert light["depth"] == 0 and light["oldest_seconds"] == pytest.approx(age, abs=5)
        assert _queue_row(response.content.decode(), "light") == f"ops-{level}"


def test_every_state_is_readable_in_both_admin_themes(client, tmp_broker):
    """At least 4.5:1 (WCAG AA): the "ok" state was the admin's light green (#dfd) on white."""
    client.force_login(UserFactory(is_staff=True))
    page = client.get("/admin/ops/").content.decode()
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)

    light, *dark = re.findall(r"--ops-ok-fg: (#[0-9a-f]{6})", style)
    assert _contrast(light, "#ffffff") >= 4.5  # the admin's --body-bg, light theme
    assert dark and all(_contrast(colour, "#121212") >= 4.5 for colour in dark)  # dark theme
    for state in ("warning", "critical"):
        rule = re.search(rf"tr\.ops-{state} td \{{ color: (#[0-9a-f]{{6}}); background: (#[0-9a-f]{{6}});", style)
        assert _contrast(*rule.groups()) >= 4.5, state
    assert _contrast("#ba2121", "#ffffff") >= 4.5 and "color: var(--error-fg)" in style  # "bad" keeps the admin's
    assert '<span class="good">ok</span>' in page  # readiness and queue states are written, not only coloured
