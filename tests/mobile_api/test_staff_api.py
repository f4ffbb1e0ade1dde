"""Staff endpoints: moves, history and the "which version did bucket 17 get at T" replay."""
from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from mobile_api import services
from mobile_api.models import Release, ReleaseEvent
from tests.mobile_api.test_releases import _fresh_memos  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/api/mobile/v1/staff/models/ants-bees/channels/stable/"


@pytest.fixture
def versions(project, make_version):
    return [make_version(project, n) for n in (1, 2, 3)]


def test_promote_rollout_pause_resume_rollback(staff_api, staff, versions):
    promoted = staff_api.post(BASE + "promote", {"version": 1, "reason": "first"}, format="json")
    assert promoted.status_code == 201, promoted.content
    assert promoted.json()["state"] == "active" and promoted.json()["rollout_percent"] == 100

    canary = staff_api.post(BASE + "promote", {"version": 2, "rollout_percent": 5, "platforms": ["android"],
                                               "min_app_version": "2.0", "reason": "canary"}, format="json")
    assert canary.status_code == 201 and canary.json()["platforms"] == ["android"]

    steps = [
        ("rollout", {"version": 2, "rollout_percent": 50}, ("active", 50)),
        ("pause", {"version": 2, "reason": "crashes"}, ("paused", 50)),
        ("resume", {"version": 2}, ("active", 50)),
        ("rollback", {"version": 2, "reason": "accuracy"}, ("rolled_back", 50)),
    ]
    for action, data, expected in steps:
        response = staff_api.post(BASE + action, data, format="json")
        assert response.status_code == 200, (action, response.content)
        assert (response.json()["state"], response.json()["rollout_percent"]) == expected

    last = ReleaseEvent.objects.filter(channel__name="stable").first()
    assert (last.action, last.actor, last.reason, last.from_version, last.to_version) == (
        "rollback", staff, "accuracy", 2, 1)


def test_promote_creates_the_default_channels_but_not_others(staff_api, versions):
    assert staff_api.post(BASE.replace("stable", "beta") + "promote", {"version": 1}, format="json").status_code == 201
    response = staff_api.post(BASE.replace("stable", "nightly") + "promote", {"version": 1}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "channel_not_found"
    response = staff_api.post(BASE.replace("ants-bees", "wasps") + "promote", {"version": 1}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_bad_requests_are_4xx_with_the_error_shape(staff_api, versions):
    cases = [
        ("promote", {"version": 9}, 404, "model_version_not_found"),
        ("promote", {"version": "x"}, 400, "invalid"),
        ("promote", {"version": 1, "rollout_percent": 101}, 400, "invalid"),
        ("promote", {"version": 1, "platforms": ["windows"]}, 400, "invalid"),
        ("promote", {"version": 1, "min_app_version": "3", "max_app_version": "2"}, 400, "invalid_parameter"),
        ("promote", {"version": 1, "min_app_version": "2.0\n"}, 400, "invalid"),
        ("promote", {"version": 1, "min_app_version": "\u0662.0"}, 400, "invalid"),
        ("pause", {"version": 1}, 404, "release_not_found"),
    ]
    for action, data, status, code in cases:
        response = staff_api.post(BASE + action, data, format="json")
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (action, data)
    assert staff_api.post(BASE + "promote", {"version": 1}, format="json").status_code == 201
    again = staff_api.post(BASE + "promote", {"version": 1}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "release_exists"
    resume = staff_api.post(BASE + "resume", {"version": 1}, format="json")
    assert resume.status_code == 409 and resume.json()["error"]["code"] == "release_state_conflict"


def test_volunteers_and_anonymous_are_refused(api, volunteer_api, versions):
    assert api.post(BASE + "promote", {"version": 1}, format="json").status_code in (401, 403)
    assert volunteer_api.post(BASE + "promote", {"version": 1}, format="json").status_code == 403
    assert volunteer_api.get(BASE + "history").status_code == 403
    assert not Release.objects.exists()


def test_history_is_newest_first_and_pages(staff_api, versions):
    for version in (1, 2, 3):
        staff_api.post(BASE + "promote", {"version": version, "reason": f"v{version}"}, format="json")

    page = staff_api.get(BASE + "history", {"limit": 2}).json()
    assert [e["to_version"] for e in page["events"]] == [3, 2]
    assert page["events"][0]["actor"] and page["events"][0]["reason"] == "v3"
    assert page["events"][0]["state"]["releases"][0]["version"] == 3
    rest = staff_api.get(BASE + "history", {"limit": 2, "before": page["next_before"]}).json()
    assert [e["action"] for e in rest["events"]] == ["promote", "settings"] and rest["next_before"] is not None
    assert staff_api.get(BASE + "history", {"limit": 0}).status_code == 400
    assert staff_api.get(BASE + "history", {"limit": 10**6}).status_code == 400


def test_which_version_bucket_17_got_at_each_time(staff_api, project, versions):
    stable = services.channel_create(project=project, name="stable")
    services.release_promote(channel=stable, version=versions[0])
    t1 = timezone.now()
    release = services.release_promote(channel=stable, version=versions[1], rollout_percent=20)
    t2 = timezone.now()
    services.release_rollback(release=release)
    t3 = timezone.now()

    def resolve(at, bucket=17, **extra):
        response = staff_api.get(BASE + "resolve", {"bucket": bucket, "at": at.isoformat(), **extra})
        assert response.status_code == 200, response.content
        return response.json()["version"]

    assert [resolve(t) for t in (t1, t2, t3)] == [1, 2, 1]
    assert [resolve(t, bucket=20) for t in (t1, t2, t3)] == [1, 1, 1]
    before_anything = staff_api.get(BASE + "resolve", {"bucket": 17, "at": "2000-01-01T00:00:00Z"}).json()
    assert before_anything["version"] is None and before_anything["event_id"] is None
    # A "+01:00" offset sent unencoded arrives as " 01:00" and is still understood.
    paris = t2.astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()
    assert "+01:00" in paris
    assert staff_api.get(BASE + "resolve?bucket=17&at=" + paris).json()["version"] == 2

    for params in ({}, {"bucket": 100}, {"bucket": -1}, {"bucket": 1, "at": "yesterday"},
                   {"bucket": 1, "platform": "windows"}, {"bucket": 1, "app_version": "x"},
                   {"bucket": 1, "app_version": "2.0\n"}, {"bucket": 1, "at": "\u0662\u0660\u0662\u0666-01-01"}):
        response = staff_api.get(BASE + "resolve", params)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_parameter", params


def test_resolve_takes_any_iso_offset_and_refuses_what_it_cannot_place(staff_api, project, versions):
    """ISO 8601 allows offsets PostgreSQL refuses (beyond +-15:59): the time is placed in UTC first."""
    services.release_promote(channel=services.channel_create(project=project, name="stable"), version=versions[0])
    far_west = staff_api.get(BASE + "resolve", {"bucket": 17, "at": "2030-12-01T23:12:08-20:54"})
    assert far_west.status_code == 200 and far_west.json()["at"] == "2030-12-02T20:06:08+00:00"
    assert far_west.json()["version"] == 1
    early = staff_api.get(BASE + "resolve", {"bucket": 17, "at": "0001-01-01T00:00:00-01:00"})
    assert early.status_code == 200 and early.json()["version"] is None  # before any move


def test_resolve_respects_targeting_when_asked(staff_api, project, versions):
    stable = services.channel_create(project=project, name="stable")
    services.release_promote(channel=stable, version=versions[0])
    services.release_promote(channel=stable, version=versions[1], platforms=["ios"])

    get = lambda **p: staff_api.get(BASE + "resolve", {"bucket": 5, **p}).json()["version"]  # noqa: E731
    assert get(platform="ios") == 2
    assert get(platform="android") == 1
    assert get() == 2  # no platform named: targeting by platform is not checked
