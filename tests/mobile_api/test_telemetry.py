"""Telemetry: reports aggregate per release, the guard rolls a failing rollout back, bad input is 4xx."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from mobile_api.models import Channel, Release, ReleaseEvent, ReleaseHealth
from mobile_api.rollout import Install, bucket_of, channel_salt, resolve
from mobile_api.selectors import channel_state
from mobile_api.services import release_promote
from mobile_api.telemetry import latency_bucket, latency_histogram_add, latency_percentiles

pytestmark = pytest.mark.django_db

URL = "/api/mobile/v1/models/ants-bees/telemetry"
INSTALL = "install-0001"


@pytest.fixture
def stable(project):
    return Channel.objects.create(project=project, name="stable")


@pytest.fixture
def staged(stable, make_version):
    """v1 for everyone, v2 rolled out to 10%: (release v1, release v2)."""
    v1 = release_promote(channel=stable, version=make_version(stable.project, 1), rollout_percent=100)
    v2 = release_promote(channel=stable, version=make_version(stable.project, 2), rollout_percent=10)
    return v1, v2


def event(kind: str, version: int = 2, **extra) -> dict:
    return {"version": version, "format": "onnx", "variant": "fp32", "event": kind, **extra}


def loads(ok: int, failed: int, *, version: int = 2, error: str = "InvalidProgram") -> list[dict]:
    return [event("loaded", version)] * ok + [event("load_failed", version, error_class=error)] * failed


def report(client, events: list[dict], **body):
    return client.post(URL, {"install_id": INSTALL, "events": events, **body}, format="json")


def report_all(client, events: list[dict], capture):
    """Send events in reports of at most 100, running what each schedules on commit."""
    for start in range(0, len(events), 100):
        with capture(execute=True):
            response = report(client, events[start:start + 100])
        assert response.status_code == 202, response.json()


def _error(response) -> dict:
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


# --- histogram -------------------------------------------------------------------------------


def test_latencies_land_in_log_spaced_buckets_and_percentiles_report_the_bound():
    assert [latency_bucket(ms) for ms in (0, 1, 1.01, 2.3, 50, 50.5, 600_000)] == [
        "1", "1", "2", "5", "50", "100", "600000"
    ]
    histogram = latency_histogram_add({}, [3.0] * 50 + [15.0] * 40 + [120.0] * 9 + [4000.0])
    assert histogram == {"5": 50, "20": 40, "200": 9, "5000": 1}
    assert latency_percentiles(histogram) == {"p50": 5, "p90": 20, "p99": 200}
    assert latency_percentiles(latency_histogram_add(histogram, [4000.0])) == {"p50": 20, "p90": 200, "p99": 5000}
    assert latency_percentiles({}) == {"p50": None, "p90": None, "p99": None}


# --- aggregation ---------------------------------------------------------------------------------


def test_reports_aggregate_per_release(app_api, staged):
    v1, v2 = staged
    response = report(
        app_api,
        [
            event("downloaded"), event("loaded"), event("load_failed", error_class="InvalidProgram"),
            event("inference", latency_ms=[2.1, 2.3, 9.0]), event("loaded", version=1),
        ],
    )
    assert response.status_code == 202 and response.json() == {"accepted": 5}
    report(app_api, [event("load_failed", error_class="OutOfMemoryError"), event("inference", latency_ms=[30])])

    health = ReleaseHealth.objects.get(release=v2)
    assert (health.downloaded, health.loaded, health.load_failed) == (1, 1, 2)
    assert health.failures_by_class == {"InvalidProgram": 1, "OutOfMemoryError": 1}
    assert health.latency_histogram == {"5": 2, "10": 1, "50": 1}
    assert ReleaseHealth.objects.get(release=v1).loaded == 1


def test_error_classes_per_release_are_bounded(app_api, staged, settings):
    settings.PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES = 10_000  # keep the guard out of this
    report(app_api, [event("load_failed", error_class=f"Error{n}") for n in range(60)])
    failures = ReleaseHealth.objects.get(release=staged[1]).failures_by_class
    assert len(failures) == 51 and failures["(other)"] == 10


def test_channel_defaults_to_stable_and_other_channels_count_apart(app_api, staged, make_version):
    beta = Channel.objects.create(project=staged[0].channel.project, name="beta")
    on_beta = release_promote(channel=beta, version=staged[1].version, rollout_percent=100)
    report(app_api, [event("loaded")], channel="beta")
    report(app_api, [event("loaded")] * 2)
    assert ReleaseHealth.objects.get(release=on_beta).loaded == 1
    assert ReleaseHealth.objects.get(release=staged[1]).loaded == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_reports_lose_no_counts(app_key, project, make_version):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers with a database lock; the row lock is tested on PostgreSQL")
    from rest_framework.test import APIClient

    stable = Channel.objects.create(project=project, name="stable")
    release = release_promote(channel=stable, version=make_version(project, 1), rollout_percent=100)
    errors = []

    def send(n: int) -> None:
        client = APIClient()
        client.credentials(HTTP_X_APP_KEY=app_key[1])
        try:
            for _ in range(5):
                response = client.post(
                    URL, {"install_id": f"install-{n:04d}", "events": [event("loaded", 1)] * 10}, format="json"
                )
                if response.status_code != 202:
                    errors.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ReleaseHealth.objects.get(release=release).loaded == 4 * 5 * 10


# --- the guard -------------------------------------------------------------------------------------


def _bucket_below(percent: int, *, salt: str) -> str:
    return next(
        f"install-{n:04d}" for n in range(10_000) if bucket_of(salt=salt, install_id=f"install-{n:04d}") < percent
    )


def test_a_staged_rollout_failing_to_load_is_rolled_back_and_says_why(
    app_api, staged, django_capture_on_commit_callbacks
):
    v1, v2 = staged
    channel = v2.channel
    salt = channel_salt(model="ants-bees", channel="stable")
    early = Install(install_id=_bucket_below(10, salt=salt), app_version="2.3.0", platform="android",
                    formats=("onnx",), current_version=2)
    assert resolve(channel_state(channel=channel), early)["version"] == 2

    # 53 good loads and 7 failures, in two reports: the second crosses the threshold.
    report_all(app_api, loads(40, 0), django_capture_on_commit_callbacks)
    v2.refresh_from_db()
    assert v2.state == Release.State.ACTIVE
    report_all(app_api, loads(13, 7), django_capture_on_commit_callbacks)

    v2.refresh_from_db()
    assert v2.state == Release.State.ROLLED_BACK
    event_row = ReleaseEvent.objects.filter(release=v2).order_by("-id").first()
    assert event_row.action == ReleaseEvent.Action.AUTO_ROLLBACK and event_row.actor is None
    assert event_row.reason == "load failures 7 of 60 (11.7%) > 5% after ≥50 loads; classes: InvalidProgram 7"
    # The early install gets the previous version again.
    assert resolve(channel_state(channel=channel), early)["version"] == 1

    # Later reports about the withdrawn release still count, and roll nothing back twice.
    report_all(app_api, loads(0, 3), django_capture_on_commit_callbacks)
    assert ReleaseHealth.objects.get(release=v2).load_failed == 10
    assert ReleaseEvent.objects.filter(action=ReleaseEvent.Action.AUTO_ROLLBACK).count() == 1


@pytest.mark.parametrize(("ok", "failed"), [(39, 10), (99, 1), (95, 5)])
def test_below_the_minimum_sample_or_the_rate_nothing_happens(
    app_api, staged, django_capture_on_commit_callbacks, ok, failed
):
    report_all(app_api, loads(ok, failed), django_capture_on_commit_callbacks)
    staged[1].refresh_from_db()
    assert staged[1].state == Release.State.ACTIVE
    assert not ReleaseEvent.objects.filter(action=ReleaseEvent.Action.AUTO_ROLLBACK).exists()


def test_thresholds_come_from_settings(app_api, staged, django_capture_on_commit_callbacks, settings):
    settings.PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES = 10
    settings.PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE = 0.25
    report_all(app_api, loads(7, 3, error="Crash") + loads(0, 2, error="Abort"), django_capture_on_commit_callbacks)
    staged[1].refresh_from_db()
    assert staged[1].state == Release.State.ROLLED_BACK
    reason = ReleaseEvent.objects.get(action=ReleaseEvent.Action.AUTO_ROLLBACK).reason
    assert reason == "load failures 5 of 12 (41.7%) > 25% after ≥10 loads; classes: Crash 3, Abort 2"


def test_the_only_full_release_is_not_rolled_back_to_nothing(
    app_api, stable, make_version, django_capture_on_commit_callbacks
):
    only = release_promote(channel=stable, version=make_version(stable.project, 1), rollout_percent=100)
    report_all(app_api, loads(0, 60, version=1), django_capture_on_commit_callbacks)
    only.refresh_from_db()
    assert only.state == Release.State.ACTIVE
    assert ReleaseHealth.objects.get(release=only).load_failed == 60


def test_a_full_release_with_a_superseded_predecessor_is_rolled_back_to_it(
    app_api, stable, make_version, django_capture_on_commit_callbacks
):
    first = release_promote(channel=stable, version=make_version(stable.project, 1), rollout_percent=100)
    second = release_promote(channel=stable, version=make_version(stable.project, 2), rollout_percent=100)
    first.refresh_from_db()
    assert first.state == Release.State.SUPERSEDED
    report_all(app_api, loads(50, 10), django_capture_on_commit_callbacks)
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.state == Release.State.ROLLED_BACK and first.state == Release.State.ACTIVE


# --- staff view and admin ------------------------------------------------------------------------


def test_staff_see_aggregates_per_release(app_api, staff_api, staged, django_capture_on_commit_callbacks,
                                          django_assert_max_num_queries):
    report_all(
        app_api,
        loads(53, 7) + [event("downloaded")] * 3 + [event("inference", latency_ms=[3.0] * 9 + [40.0])],
        django_capture_on_commit_callbacks,
    )
    with django_assert_max_num_queries(6):
        response = staff_api.get("/api/mobile/v1/staff/models/ants-bees/channels/stable/telemetry")
    assert response.status_code == 200
    body = response.json()
    assert body["guard"] == {"max_load_failure_rate": 0.05, "min_load_samples": 50}
    newest, oldest = body["releases"]
    assert newest["version"] == 2 and newest["state"] == "rolled_back"
    assert (newest["downloaded"], newest["loaded"], newest["load_failed"]) == (3, 53, 7)
    assert newest["load_failure_rate"] == 0.1167 and newest["failures_by_class"] == {"InvalidProgram": 7}
    assert newest["inferences"] == 10 and newest["latency_ms"] == {"p50": 5, "p90": 5, "p99": 50}
    assert newest["automatic_action"]["action"] == "auto_rollback"
    assert newest["automatic_action"]["reason"].startswith("load failures 7 of 60 (11.7%)")
    assert oldest["version"] == 1 and oldest["loaded"] == 0 and oldest["load_failure_rate"] is None
    assert oldest["automatic_action"] is None


def test_staff_view_needs_staff_and_a_known_channel(api, volunteer_api, staff_api, staged):
    url = "/api/mobile/v1/staff/models/ants-bees/channels/stable/telemetry"
    assert api.get(url).status_code in (401, 403)
    assert volunteer_api.get(url).status_code == 403
    missing = staff_api.get("/api/mobile/v1/staff/models/ants-bees/channels/nightly/telemetry")
    assert missing.status_code == 404 and _error(missing)["code"] == "channel_not_found"


def test_admin_lists_release_health_read_only(admin_client, app_api, staged, django_capture_on_commit_callbacks):
    report_all(
        app_api, loads(53, 7) + [event("inference", latency_ms=[3.0, 8.0])], django_capture_on_commit_callbacks
    )
    page = admin_client.get("/admin/mobile_api/releasehealth/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "11.7%" in text and "InvalidProgram 7" in text and "load failures 7 of 60" in text
    health = ReleaseHealth.objects.get(release=staged[1])
    assert admin_client.get(f"/admin/mobile_api/releasehealth/{health.pk}/change/").status_code == 200
    assert admin_client.get("/admin/mobile_api/releasehealth/add/").status_code == 403


# --- bad input ---------------------------------------------------------------------------------------


def test_missing_or_unknown_app_key_is_401(api, staged):
    response = report(api, [event("loaded")])
    assert response.status_code == 401 and _error(response)["code"] == "app_key_invalid"


def test_unknown_model_or_channel_is_404(app_api, staged):
    response = app_api.post(
        "/api/mobile/v1/models/wasps/telemetry", {"install_id": INSTALL, "events": [event("loaded")]}, format="json"
    )
    assert response.status_code == 404 and _error(response)["code"] == "model_not_found"
    response = report(app_api, [event("loaded")], channel="nightly")
    assert response.status_code == 404 and _error(response)["code"] == "channel_not_found"


def test_a_version_never_released_on_the_channel_refuses_the_whole_report(app_api, staged, make_version):
    make_version(staged[0].channel.project, 3)  # published, never released on stable
    response = report(app_api, [event("loaded"), event("loaded", version=3)])
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "unknown_release" and "events[1].version" in error["fields"]
    assert not ReleaseHealth.objects.exists()


def test_a_file_the_version_does_not_have_is_400(app_api, staged):
    response = report(app_api, [{**event("loaded"), "format": "pte", "variant": "int8"}])
    assert response.status_code == 400
    assert _error(response)["code"] == "unknown_artifact" and "events[0].variant" in _error(response)["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": []}, "events"),
        ({"events": [event("loaded")] * 101}, "events"),
        ({"events": "loaded"}, "events"),
        ({"install_id": "x"}, "install_id"),
        ({"install_id": None}, "install_id"),
        # Refused, not stripped: the same id is refused by the update check (PROTOCOL.md).
        ({"install_id": INSTALL + "\n"}, "install_id"),
        ({"channel": "no such/channel"}, "channel"),
        ({"channel": "stable\n"}, "channel"),
        ({"events": [event("loaded", variant="fp32\n")]}, "events"),
        ({"events": [event("exploded")]}, "events"),
        ({"events": [event("loaded", version="two")]}, "events"),
        ({"events": [event("loaded", version=0)]}, "events"),
        ({"events": [{"event": "loaded"}]}, "events"),
        ({"events": [event("load_failed")]}, "events"),
        ({"events": [event("load_failed", error_class="x" * 81)]}, "events"),
        ({"events": [event("load_failed", error_class="no spaces please")]}, "events"),
        ({"events": [event("loaded", error_class="InvalidProgram")]}, "events"),
        ({"events": [event("inference")]}, "events"),
        ({"events": [event("inference", latency_ms=[])]}, "events"),
        ({"events": [event("inference", latency_ms=[1.0] * 101)]}, "events"),
        ({"events": [event("inference", latency_ms=[-1.0])]}, "events"),
        ({"events": [event("inference", latency_ms=["NaN"])]}, "events"),
        ({"events": [event("inference", latency_ms=["Infinity"])]}, "events"),
        ({"events": [event("inference", latency_ms=[True])]}, "events"),
        ({"events": [event("inference", latency_ms=[1e12])]}, "events"),
        ({"events": [event("loaded", latency_ms=[2.0])]}, "events"),
    ],
)
def test_malformed_reports_are_400_naming_the_field(app_api, staged, body, field):
    payload = {"install_id": INSTALL, "events": [event("loaded")], **body}
    response = app_api.post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in _error(response)["fields"]
    assert not ReleaseHealth.objects.exists()


def test_an_oversized_report_is_413_before_it_is_parsed(app_api, staged):
    events = [event("inference", latency_ms=[1.0] * 100)] * 3000
    response = report(app_api, events)
    assert response.status_code == 413 and _error(response)["code"] == "report_too_large"


def test_a_full_report_fits_the_size_limit(app_api, staged):
    response = report(app_api, [event("inference", latency_ms=[123.456789] * 100)] * 100)
    assert response.status_code == 202
    assert ReleaseHealth.objects.get(release=staged[1]).latency_histogram == {"200": 100 * 100}


def test_the_error_names_the_event_and_its_field(app_api, staged):
    response = report(app_api, [event("loaded"), event("inference", latency_ms=[1.0, -2.0])])
    fields = _error(response)["fields"]
    assert "latency_ms" in fields["events"]["1"]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"install_id": "install-0001", "events": [{"latency_ms": [NaN]}]}', b"[1, 2]", b"null"],
)
def test_bodies_that_are_not_a_report_are_400(app_api, staged, raw):
    response = app_api.generic("POST", URL, raw, content_type="application/json")
    assert response.status_code == 400 and "error" in response.json()


def test_floods_are_rate_limited_per_key_and_install(app_api, app_key, staged):
    key = app_key[0]
    key.rate_limit_per_minute = 3
    key.save()
    statuses = [report(app_api, [event("loaded")]).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    limited = report(app_api, [event("loaded")])
    assert limited.has_header("Retry-After") and _error(limited)["code"] == "rate_limited"
    assert report(app_api, [event("loaded")], install_id="install-0002").status_code == 202
    assert ReleaseHealth.objects.get(release=staged[1]).loaded == 4
