"""Releases on channels: bucketing, staged rollout, targeting, the moves and their history.

These tests run with real commits (``transaction=True``): the channel document is rebuilt
and the static manifest written only once a move's transaction commits.
"""
from __future__ import annotations

import json
import math
import uuid

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from mobile_api import auth, rollout, selectors, services, update
from mobile_api.models import Channel, Release, ReleaseEvent

pytestmark = pytest.mark.django_db(transaction=True)

BOTH = {("onnx", "fp32"): b"onnx float" * 50, ("pte", "int8"): b"pte int8" * 30}


@pytest.fixture(autouse=True)
def _fresh_memos(settings):
    """Process memos outlive a test (and ids are reused after a flush): start and end empty."""
    settings.PLATFORM_UPDATE_LOCAL_TTL = 0
    update.memo_clear()
    auth._memo.clear()
    yield
    update.memo_clear()
    auth._memo.clear()


@pytest.fixture
def stable(project) -> Channel:
    return services.channel_create(project=project, name="stable")


def install(install_id: str | None = None, *, platform="android", formats=("onnx", "pte"), app_version="2.0.0",
            current_version=None) -> rollout.Install:
    return rollout.Install(install_id or uuid.uuid4().hex, app_version, platform, tuple(formats), current_version)


def resolved_version(channel: Channel | dict, who: rollout.Install) -> int | None:
    """What the install gets now, from the channel's current state (or a state read once)."""
    state = channel if isinstance(channel, dict) else selectors.channel_state(channel=channel)
    release = rollout.resolve(state, who)
    return release["version"] if release else None


def id_in_bucket(salt: str, wanted) -> str:
    """An install id whose bucket satisfies ``wanted(bucket)``."""
    for n in range(10_000):
        candidate = f"install-{n:06d}"
        if wanted(rollout.bucket_of(salt=salt, install_id=candidate)):
            return candidate
    raise AssertionError("no such install id")


# --- the bucketing function ---------------------------------------------------------------------

def test_the_bucket_is_the_documented_function_and_stable():
    import hashlib

    salt = rollout.channel_salt(model="ants-bees", channel="stable")
    assert salt == "ants-bees/stable"
    iid = "3f1c2a9e-7b5d-4c1e-9a0b-123456789abc"
    expected = int(hashlib.sha256(f"{salt}:{iid}".encode()).hexdigest()[:8], 16) % 100
    assert rollout.bucket_of(salt=salt, install_id=iid) == expected
    assert {rollout.bucket_of(salt=salt, install_id=iid) for _ in range(5)} == {expected}
    # Another channel shuffles installs independently.
    buckets = [rollout.bucket_of(salt=salt, install_id=f"id-{n:05d}") for n in range(2000)]
    assert set(buckets) == set(range(100))


def test_resolve_and_resolve_bucket_agree():
    state = {"salt": "m/c", "releases": [
        {"release_id": 2, "version": 2, "state": "active", "rollout_percent": 30, "platforms": [], "formats": [],
         "min_app_version": "", "max_app_version": ""},
        {"release_id": 1, "version": 1, "state": "active", "rollout_percent": 100, "platforms": [], "formats": [],
         "min_app_version": "", "max_app_version": ""},
    ]}
    for n in range(300):
        who = install(f"agree-{n:04d}")
        bucket = rollout.bucket_of(salt="m/c", install_id=who.install_id)
        assert rollout.resolve(state, who) == rollout.resolve_bucket(state, bucket=bucket, install=who)
        assert rollout.resolve(state, who)["version"] == (2 if bucket < 30 else 1)


# --- staged rollout -----------------------------------------------------------------------------

def test_a_quarter_rollout_reaches_about_a_quarter_of_random_installs(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1))
    services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=25)

    installs = [install() for _ in range(1000)]
    state = selectors.channel_state(channel=stable)
    first = [resolved_version(state, who) for who in installs]
    share = first.count(2) / len(first)
    # Binomial(1000, 0.25): sd 1.37%; 5 sd either side fails about once in 3.5 million runs.
    sd = math.sqrt(0.25 * 0.75 / 1000)
    assert abs(share - 0.25) < 5 * sd, share
    assert set(first) == {1, 2}
    # Same install, same answer, poll after poll.
    assert [resolved_version(selectors.channel_state(channel=stable), who) for who in installs[:50]] == first[:50]


def test_raising_the_rollout_keeps_everyone_already_on_it(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1))
    release = services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=10)
    installs = [install() for _ in range(400)]
    state = selectors.channel_state(channel=stable)
    before = {who.install_id for who in installs if resolved_version(state, who) == 2}

    services.release_rollout(release=release, rollout_percent=50, reason="healthy")

    state = selectors.channel_state(channel=stable)
    after = {who.install_id for who in installs if resolved_version(state, who) == 2}
    assert before < after  # buckets 0..9 are a subset of 0..49


def test_a_full_rollout_supersedes_the_release_it_hides(project, stable, make_version):
    old = services.release_promote(channel=stable, version=make_version(project, 1))
    new = services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=40)
    old.refresh_from_db()
    assert old.state == Release.State.ACTIVE

    services.release_rollout(release=new, rollout_percent=100)

    old.refresh_from_db()
    assert old.state == Release.State.SUPERSEDED
    assert [r["version"] for r in selectors.channel_state(channel=stable)["releases"]] == [2]


def test_pause_keeps_installs_already_on_it_and_stops_new_ones(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1))
    release = services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=50)
    salt = "ants-bees/stable"
    covered = id_in_bucket(salt, lambda b: b < 50)

    services.release_pause(release=release, reason="crash reports")

    assert resolved_version(stable, install(covered, current_version=2)) == 2  # already has it: keeps it
    assert resolved_version(stable, install(covered, current_version=1)) == 1  # not yet: does not get it
    assert resolved_version(stable, install(covered)) == 1

    services.release_resume(release=release, reason="fixed server side")
    assert resolved_version(stable, install(covered, current_version=1)) == 2


def test_rollback_sends_everyone_to_the_previous_release(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1))
    release = services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=60)

    services.release_rollback(release=release, reason="bad accuracy in the field")

    state = selectors.channel_state(channel=stable)
    assert {resolved_version(state, install(current_version=2)) for _ in range(200)} == {1}


def test_rolling_back_a_full_release_restores_the_one_it_superseded(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1))
    services.release_promote(channel=stable, version=make_version(project, 2))
    v3 = services.release_promote(channel=stable, version=make_version(project, 3))
    assert [r["version"] for r in selectors.channel_state(channel=stable)["releases"]] == [3]

    services.release_rollback(release=v3, reason="regression")
    assert [r["version"] for r in selectors.channel_state(channel=stable)["releases"]] == [2]
    event = ReleaseEvent.objects.filter(channel=stable).first()
    assert (event.action, event.from_version, event.to_version) == ("rollback", 3, 2)

    v2 = selectors.release_get_live(channel=stable, version=2)
    services.release_rollback(release=v2)
    assert [r["version"] for r in selectors.channel_state(channel=stable)["releases"]] == [1]


def test_targeting_by_platform_format_and_app_version(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1, files=BOTH))
    services.release_promote(channel=stable, version=make_version(project, 2, files=BOTH), platforms=["ios"])
    services.release_promote(channel=stable, version=make_version(project, 3, files=BOTH), formats=["pte"],
                             min_app_version="2.1", max_app_version="2.9.9")

    assert resolved_version(stable, install(platform="ios", app_version="1.0")) == 2
    assert resolved_version(stable, install(platform="android", app_version="1.0")) == 1
    assert resolved_version(stable, install(platform="android", formats=["pte"], app_version="2.5.0")) == 3
    assert resolved_version(stable, install(platform="android", formats=["onnx"], app_version="2.5.0")) == 1
    assert resolved_version(stable, install(platform="android", formats=["pte"], app_version="2.10")) == 1
    assert resolved_version(stable, install(platform="ios", formats=["pte"], app_version="2.1.0")) == 3


def test_a_release_without_the_accepted_format_falls_through(project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1, files=BOTH))
    only_onnx = make_version(project, 2)  # onnx only
    services.release_promote(channel=stable, version=only_onnx)

    assert resolved_version(stable, install(formats=["pte"])) == 1  # v1 is not superseded for pte installs
    assert resolved_version(stable, install(formats=["onnx"])) == 2


def test_moves_are_refused_clearly(project, stable, make_version):
    from common.errors import Conflict, ValidationFailed

    v1 = make_version(project, 1)
    release = services.release_promote(channel=stable, version=v1)
    with pytest.raises(Conflict):
        services.release_promote(channel=stable, version=v1)
    with pytest.raises(Conflict):
        services.release_resume(release=release)
    with pytest.raises(ValidationFailed) as refused:
        services.release_rollout(release=release, rollout_percent=101)
    assert refused.value.extra["fields"] == {"rollout_percent": "an integer from 0 to 100"}
    with pytest.raises(ValidationFailed):
        services.release_promote(channel=stable, version=make_version(project, 2), min_app_version="2.x")
    with pytest.raises(ValidationFailed):
        services.release_promote(channel=stable, version=make_version(project, 3), formats=["pte"])  # no pte file
    services.release_rollback(release=release)
    with pytest.raises(Conflict):
        services.release_pause(release=release)


# --- history ------------------------------------------------------------------------------------

def test_every_move_is_in_the_history_with_who_why_and_the_state(project, stable, make_version, staff):
    v1, v2 = make_version(project, 1), make_version(project, 2)
    services.release_promote(channel=stable, version=v1, actor=staff, reason="first")
    release = services.release_promote(channel=stable, version=v2, rollout_percent=20, actor=staff, reason="canary")
    services.release_pause(release=release, reason="load failures", automatic=True)
    services.release_rollback(release=release, reason="load failures", automatic=True)

    events = list(ReleaseEvent.objects.filter(channel=stable).order_by("id"))
    assert [e.action for e in events] == ["settings", "promote", "promote", "auto_pause", "auto_rollback"]
    promote = events[2]
    assert (promote.actor, promote.reason, promote.from_version, promote.to_version, promote.rollout_percent) == (
        staff, "canary", 1, 2, 20)
    assert [r["version"] for r in promote.state["releases"]] == [2, 1]
    assert promote.state["salt"] == "ants-bees/stable"
    assert events[4].actor is None and events[4].reason == "load failures"
    assert [e.generation for e in events] == [1, 2, 3, 4, 5]
    stable.refresh_from_db()
    assert stable.generation == 5


def test_which_version_bucket_17_got_at_each_time(project, stable, make_version):
    """Promote v1 to all, v2 to 20%, roll back: replaying the history answers v1, v2, v1 for bucket 17."""
    services.release_promote(channel=stable, version=make_version(project, 1))
    t1 = timezone.now()
    release = services.release_promote(channel=stable, version=make_version(project, 2), rollout_percent=20)
    t2 = timezone.now()
    services.release_rollback(release=release)
    t3 = timezone.now()

    def at(when, bucket):
        event = selectors.channel_event_at(channel=stable, at=when)
        found = rollout.resolve_bucket(event.state, bucket=bucket, install=rollout.Install("", "", "", ()))
        return found["version"] if found else None

    assert [at(t, 17) for t in (t1, t2, t3)] == [1, 2, 1]  # 17 < 20
    assert [at(t, 20) for t in (t1, t2, t3)] == [1, 1, 1]
    # The replay agrees with what a real install in bucket 17 resolved to at the time.
    who = install(id_in_bucket("ants-bees/stable", lambda b: b == 17))
    assert resolved_version(stable, who) == 1


def test_release_for_report_finds_the_newest_release_of_a_version(project, stable, make_version):
    v1 = make_version(project, 1)
    first = services.release_promote(channel=stable, version=v1)
    services.release_rollback(release=first)
    second = services.release_promote(channel=stable, version=v1, rollout_percent=5)

    assert selectors.release_for_report(project_slug="ants-bees", channel="stable", version=1) == second
    assert selectors.release_for_report(project_slug="ants-bees", channel="beta", version=1) is None


# --- the static manifest --------------------------------------------------------------------------

def test_a_promote_writes_the_static_manifest_with_the_rule(project, stable, make_version, settings):
    settings.PLATFORM_BASE_URL = "https://models.example.org"
    services.release_promote(channel=stable, version=make_version(project, 1, files=BOTH))
    services.release_promote(channel=stable, version=make_version(project, 2, files=BOTH), rollout_percent=30)

    name = "manifests/ants-bees/stable.json"
    assert default_storage.exists(name)
    with default_storage.open(name) as fh:
        document = json.load(fh)
    stable.refresh_from_db()
    assert document["schema"] == 1 and document["model"] == "ants-bees" and document["channel"] == "stable"
    assert document["generation"] == stable.generation
    assert document["bucketing"]["salt"] == "ants-bees/stable" and document["bucketing"]["buckets"] == 100
    assert "sha256" in document["bucketing"]["rule"]
    assert document["download"] == {"wifi_only": False, "charging_only": False, "max_cellular_bytes": 20971520}
    assert document["poll_interval_seconds"] == 21600
    assert [(r["version"], r["rollout_percent"], r["state"]) for r in document["releases"]] == [
        (2, 30, "active"), (1, 100, "active")]
    manifest = document["releases"][0]["manifest"]
    assert manifest["version"] == 2 and manifest["labels"] == ["ants", "bees"]
    urls = [a["download_url"] for a in manifest["artifacts"]]
    assert urls == ["https://models.example.org/api/mobile/v1/models/ants-bees/versions/2/onnx-fp32",
                    "https://models.example.org/api/mobile/v1/models/ants-bees/versions/2/pte-int8"]

    # An app (or an edge worker) resolving from the object gets what the rules give.
    state = selectors.channel_state(channel=stable)
    for n in range(200):
        who = install(f"static-{n:04d}")
        assert rollout.resolve(document, who)["version"] == resolved_version(state, who)


def test_a_settings_change_bumps_the_generation_and_republishes(project, stable):
    stable.poll_interval_seconds = 3600
    stable.wifi_only = True
    services.channel_settings_save(channel=stable, reason="save data")

    with default_storage.open("manifests/ants-bees/stable.json") as fh:
        document = json.load(fh)
    assert document["poll_interval_seconds"] == 3600 and document["download"]["wifi_only"] is True
    assert ReleaseEvent.objects.filter(channel=stable).first().action == "settings"


def test_version_distribute_releases_on_the_default_channels(project, make_version):
    version = make_version(project, 1)

    services.version_distribute(version=version)
    services.version_distribute(version=version)  # a second call changes nothing (and does not raise)

    channels = {c.name: c for c in Channel.objects.filter(project=project)}
    assert set(channels) == {"stable", "beta"}
    for channel in channels.values():
        assert [r["version"] for r in selectors.channel_state(channel=channel)["releases"]] == [1]
        assert default_storage.exists(f"manifests/ants-bees/{channel.name}.json")


def test_version_distribute_uses_the_auto_rollout_and_skips_manual_channels(project, make_version):
    services.channel_create(project=project, name="stable", auto_promote=True, auto_rollout_percent=10)
    services.channel_create(project=project, name="beta", auto_promote=False)
    services.channel_create(project=project, name="dogfood", auto_promote=True)

    services.version_distribute(version=make_version(project, 1))

    releases = {r.channel.name: r for r in Release.objects.select_related("channel")}
    assert set(releases) == {"stable", "dogfood"}
    assert default_storage.exists("manifests/ants-bees/beta.json")  # unchanged, but written
    assert releases["stable"].rollout_percent == 10 and releases["dogfood"].rollout_percent == 100


# --- the nightly job hands its version over ------------------------------------------------------

from tests.training.conftest import colour_photos, fake_compression, fake_pipeline, small_splits  # noqa: E402,F401


def test_a_published_run_is_released_on_the_default_channels(colour_photos, fake_pipeline):
    """In-process: the publish's event queues mobile_api.tasks.version_distribute, run eagerly (tests' Celery)."""
    from mobile_api.models import VersionDistribution
    from training.models import TrainingRun
    from training.nightly import training_run_execute

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    distribution = VersionDistribution.objects.get(version__project=colour_photos)
    assert (distribution.status, distribution.channels, distribution.attempts) == ("done", ["beta", "stable"], 1)
    for name in ("stable", "beta"):
        channel = Channel.objects.get(project=colour_photos, name=name)
        assert [r["version"] for r in selectors.channel_state(channel=channel)["releases"]] == [1]
        with default_storage.open(f"manifests/ants-bees/{name}.json") as fh:
            assert json.load(fh)["releases"][0]["version"] == 1


def test_on_s3_the_static_manifest_is_replaced_by_one_put(monkeypatch):
    """S3 storages (file_overwrite off) would rename or leave a gap: one PUT replaces the object."""
    from unittest import mock

    storage = mock.Mock(spec=["bucket", "_normalize_name", "path"])
    storage.path.side_effect = NotImplementedError  # as S3Storage: no local path
    storage._normalize_name.side_effect = lambda name: f"prod/{name}"
    monkeypatch.setattr(services, "default_storage", storage)

    services.static_manifest_write(document={"model": "ants-bees", "channel": "stable", "releases": []})

    storage.bucket.Object.assert_called_once_with("prod/manifests/ants-bees/stable.json")
    put = storage.bucket.Object.return_value.put.call_args.kwargs
    assert json.loads(put["Body"])["channel"] == "stable" and put["ContentType"] == "application/json"
