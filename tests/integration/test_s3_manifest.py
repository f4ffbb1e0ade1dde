"""The static channel manifest on a real S3 server (Ceph RADOS Gateway on loopback).

nginx or a CDN serves `manifests/<model>/<channel>.json` straight from the bucket, so the
object itself is the contract: written by a promote, replaced in place (one key, never a
renamed copy) by every later move, with the JSON content type and no-cache, and read back
with the channel's current generation and releases.
"""
from __future__ import annotations

import json

import pytest

from mobile_api import services as release_services
from tests.mobile_api.conftest import make_version  # noqa: F401  (a fixture: published versions)

pytestmark = [pytest.mark.services, pytest.mark.django_db]


def _read(services, key: str) -> tuple[dict, dict]:
    stored = services.boto3_client().get_object(Bucket=services.s3_bucket, Key=key)
    return json.loads(stored["Body"].read()), stored


def test_moves_write_the_static_manifest_to_the_bucket_and_replace_it_in_place(
    s3_storage, services, s3_prefix, project, make_version, settings, django_capture_on_commit_callbacks
):
    settings.PLATFORM_BASE_URL = "https://models.example.org"
    stable = release_services.channel_create(project=project, name="stable")
    key = f"{s3_prefix}/manifests/ants-bees/stable.json"

    with django_capture_on_commit_callbacks(execute=True):  # the write follows the commit
        release_services.release_promote(channel=stable, version=make_version(project, 1))
    document, stored = _read(services, key)
    assert stored["ContentType"] == "application/json" and stored["CacheControl"] == "no-cache"
    assert document["model"] == "ants-bees" and document["channel"] == "stable"
    assert [(r["version"], r["rollout_percent"], r["state"]) for r in document["releases"]] == [(1, 100, "active")]
    assert document["releases"][0]["manifest"]["artifacts"][0]["download_url"] == (
        "https://models.example.org/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32")

    with django_capture_on_commit_callbacks(execute=True):
        second = release_services.release_promote(channel=stable, version=make_version(project, 2),
                                                  rollout_percent=30)
    document, _ = _read(services, key)
    assert [(r["version"], r["rollout_percent"]) for r in document["releases"]] == [(2, 30), (1, 100)]

    with django_capture_on_commit_callbacks(execute=True):
        release_services.release_rollback(release=second, reason="bad numbers")
    document, _ = _read(services, key)
    stable.refresh_from_db()
    assert document["generation"] == stable.generation
    live = [(r["version"], r["state"]) for r in document["releases"] if r["state"] in ("active", "paused")]
    assert live == [(1, "active")]
    # One object under manifests/: replaced in place, no renamed copies beside it.
    listing = services.boto3_client().list_objects_v2(Bucket=services.s3_bucket, Prefix=f"{s3_prefix}/manifests/")
    assert [o["Key"] for o in listing.get("Contents", [])] == [key]
