"""Distribution in the Django admin: app keys shown once and revoked, channel settings, moves."""
from __future__ import annotations

import json
import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from mobile_api import auth, services
from mobile_api.models import AppKey, Channel, Release, ReleaseEvent
from tests.mobile_api.test_releases import _fresh_memos  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

UPDATE = "/api/mobile/v1/models/ants-bees/update?install_id=install-0001&app_version=1.0&platform=ios&formats=onnx"


@pytest.fixture
def stable(project, make_version) -> Channel:
    channel = services.channel_create(project=project, name="stable")
    services.release_promote(channel=channel, version=make_version(project, 1))
    return channel


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(admin_client, stable, staff):
    response = admin_client.post("/admin/mobile_api/appkey/add/",
                                 {"name": "Android (Play)", "rate_limit_per_minute": 120}, follow=True)
    assert response.status_code == 200
    shown = [m for m in _messages(response) if "mk_" in m]
    assert len(shown) == 1
    key = re.search(r"(mk_[A-Za-z0-9_-]+)", shown[0]).group(1)
    row = AppKey.objects.get(name="Android (Play)")
    assert row.key_sha256 == auth.key_sha256(key) and key.startswith(f"mk_{row.prefix}_")
    assert row.created_by == staff and row.rate_limit_per_minute == 120

    page = admin_client.get(f"/admin/mobile_api/appkey/{row.pk}/change/")
    assert page.status_code == 200 and key not in page.content.decode()

    app = APIClient()
    app.credentials(HTTP_X_APP_KEY=key)
    assert app.get(UPDATE).status_code == 200


def test_revoking_a_key_gets_its_apps_401(admin_client, stable, app_key, staff):
    row, key = app_key
    app = APIClient()
    app.credentials(HTTP_X_APP_KEY=key)
    assert app.get(UPDATE).status_code == 200

    admin_client.post("/admin/mobile_api/appkey/", {"action": "revoke", ACTION_CHECKBOX_NAME: [row.pk]})

    row.refresh_from_db()
    assert row.revoked_at is not None and row.revoked_by == staff
    assert app.get(UPDATE).status_code == 401
    assert admin_client.get(f"/admin/mobile_api/appkey/{row.pk}/delete/").status_code == 403


def test_changing_channel_settings_bumps_the_generation_and_republishes(admin_client, stable):
    stable.refresh_from_db()
    generation = stable.generation
    response = admin_client.post(f"/admin/mobile_api/channel/{stable.pk}/change/", {
        "auto_promote": "on", "auto_rollout_percent": 20, "poll_interval_seconds": 3600, "wifi_only": "on",
        "max_cellular_bytes": 0,
        "releases-TOTAL_FORMS": 1, "releases-INITIAL_FORMS": 1, "releases-MIN_NUM_FORMS": 0,
        "releases-MAX_NUM_FORMS": 1000, "releases-0-id": Release.objects.get().pk, "releases-0-channel": stable.pk,
    })
    assert response.status_code == 302, response.content.decode()[:2000]

    stable.refresh_from_db()
    assert (stable.poll_interval_seconds, stable.wifi_only, stable.generation) == (3600, True, generation + 1)
    event = ReleaseEvent.objects.filter(channel=stable).first()
    assert event.action == "settings" and event.actor is not None
    with default_storage.open("manifests/ants-bees/stable.json") as fh:
        document = json.load(fh)
    assert document["poll_interval_seconds"] == 3600 and document["download"]["max_cellular_bytes"] == 0


def test_the_channel_page_shows_releases_and_history(admin_client, stable):
    page = admin_client.get(f"/admin/mobile_api/channel/{stable.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "History (newest first)" in html and "Promote" in html and "v1" in html
    assert admin_client.get("/admin/mobile_api/channel/").status_code == 200


def test_promote_latest_asks_for_a_reason_then_moves(admin_client, project, stable, make_version, staff):
    make_version(project, 2)
    data = {"action": "promote_latest", ACTION_CHECKBOX_NAME: [stable.pk]}

    asked = admin_client.post("/admin/mobile_api/channel/", data)
    assert asked.status_code == 200 and b"rollout_percent" in asked.content
    assert not Release.objects.filter(version__version=2).exists()

    done = admin_client.post("/admin/mobile_api/channel/",
                             {**data, "apply": "1", "rollout_percent": 10, "reason": "weekly canary"})
    assert done.status_code == 302
    release = Release.objects.get(version__version=2)
    assert release.rollout_percent == 10 and release.created_by == staff
    event = ReleaseEvent.objects.filter(channel=stable).first()
    assert (event.action, event.reason, event.actor, event.to_version) == ("promote", "weekly canary", staff, 2)


def test_release_actions_pause_change_rollout_and_roll_back(admin_client, project, stable, make_version):
    canary = services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=5)
    url = "/admin/mobile_api/release/"

    def act(action, **form):
        return admin_client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [canary.pk], "apply": "1", **form})

    act("pause", reason="crash spike")
    canary.refresh_from_db()
    assert canary.state == "paused"
    act("resume", reason="fixed")
    act("change_rollout", rollout_percent=40, reason="healthy")
    canary.refresh_from_db()
    assert (canary.state, canary.rollout_percent) == ("active", 40)
    act("rollback", reason="accuracy")
    canary.refresh_from_db()
    assert canary.state == "rolled_back"
    assert [e.action for e in ReleaseEvent.objects.filter(channel=stable)[:4]] == [
        "rollback", "rollout", "resume", "pause"]

    refused = act("resume", reason="again")  # not paused: an error message, no change
    assert refused.status_code == 302
    assert any("rolled_back" in m for m in _messages(refused))


def test_history_and_releases_are_read_only(admin_client, stable):
    event = ReleaseEvent.objects.filter(channel=stable).first()
    assert admin_client.get("/admin/mobile_api/releaseevent/").status_code == 200
    assert admin_client.get(f"/admin/mobile_api/releaseevent/{event.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/mobile_api/releaseevent/{event.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/mobile_api/releaseevent/add/").status_code == 403
    assert admin_client.get("/admin/mobile_api/release/add/").status_code == 403
    release = Release.objects.get()
    admin_client.post(f"/admin/mobile_api/release/{release.pk}/change/", {"rollout_percent": 1})
    release.refresh_from_db()
    assert release.rollout_percent == 100


def test_an_admin_created_channel_is_served_at_once(admin_client, project, stable, app_key):
    response = admin_client.post("/admin/mobile_api/channel/add/", {
        "project": project.pk, "name": "dogfood", "auto_rollout_percent": 100, "poll_interval_seconds": 600,
        "max_cellular_bytes": 1000,
        "releases-TOTAL_FORMS": 0, "releases-INITIAL_FORMS": 0, "releases-MIN_NUM_FORMS": 0,
        "releases-MAX_NUM_FORMS": 1000,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    app = APIClient()
    app.credentials(HTTP_X_APP_KEY=app_key[1])
    answer = app.get(UPDATE + "&channel=dogfood")
    assert answer.status_code == 200 and answer.json()["version"] is None
    assert answer.json()["poll_interval_seconds"] == 600


def test_republish_rewrites_a_lost_static_manifest(admin_client, stable):
    default_storage.delete("manifests/ants-bees/stable.json")

    admin_client.post("/admin/mobile_api/channel/", {"action": "republish", ACTION_CHECKBOX_NAME: [stable.pk]})

    with default_storage.open("manifests/ants-bees/stable.json") as fh:
        assert json.load(fh)["releases"][0]["version"] == 1
