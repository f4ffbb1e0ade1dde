"""Fault: the S3 server (radosgw) stops while volunteers upload photos.

Uploads during the outage must be refused quickly and cleanly (503, Retry-After, the JSON
error body), nothing accepted may be lost, and afterwards every row has its three objects
and every object a row, once the sweep has removed what requests cut short left behind.
"""
from __future__ import annotations

import hashlib
import time
import uuid

import pytest
import requests
from django.core.files.base import ContentFile
from rest_framework.authtoken.models import Token

from common.storage_sweep import storage_sweep
from submissions.models import Photo
from tests.integration.web_process import Traffic, Volunteer, seconds_summary, web_process

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OUTAGE_BOUND_SECONDS = 10  # every upload is answered within this, outage or not


def _photo_objects(services, prefix: str) -> set[str]:
    """Storage names (without the test's prefix) of every object in the photo folders."""
    paginator = services.boto3_client().get_paginator("list_objects_v2")
    names = set()
    for page in paginator.paginate(Bucket=services.s3_bucket, Prefix=f"{prefix}/photos/"):
        names.update(entry["Key"][len(prefix) + 1:] for entry in page.get("Contents", ()))
    return names


def _row_objects() -> set[str]:
    names = set()
    for row in Photo.objects.values_list("image", "display_image", "thumbnail"):
        names.update(row)
    return names


def test_s3_stopped_during_uploads(services, s3_storage, s3_prefix, volunteer, challenge, tmp_path, fault_report):
    token = Token.objects.create(user=volunteer).key
    with web_process(services=services, s3_prefix=s3_prefix, tmp_path=tmp_path) as web:
        client = Volunteer(url=web.url, token=token, challenge_id=challenge.pk)
        before = [client.upload() for _ in range(3)]
        assert [o.status for o in before] == [201] * 3, [o.failure or o.error_code for o in before]

        with Traffic(client.upload, client.upload, client.upload) as traffic:
            time.sleep(1.0)
            stopping = time.monotonic()
            services.control("stop-s3")
            stopped = time.monotonic()
            traffic.wait_for(lambda seen: sum(o.started > stopped for o in seen) >= 6, timeout=20)
            restarting = time.monotonic()
            services.control("start-s3")
            started = time.monotonic()
            traffic.wait_for(lambda seen: sum(o.started > started and o.status == 201 for o in seen) >= 3, timeout=20)
        outcomes = traffic.snapshot()

        # The client did what Retry-After says: each refused upload again, same bytes and key.
        refused = [o for o in outcomes if o.status == 503]
        retried = client.retry(refused)

    # What the clients saw.
    during = [o for o in outcomes if o.started > stopped and o.ended < restarting]
    after = [o for o in outcomes if o.started > started]
    assert during and all(o.status == 503 for o in during), [(o.status, o.failure) for o in during]
    assert all(o.status in (201, 503) for o in outcomes), {(o.status, o.error_code, o.failure) for o in outcomes}
    for o in refused:
        assert o.error_code == "storage_unavailable" and o.retry_after and int(o.retry_after) > 0
        assert o.content_type.startswith("application/json")
    assert max(o.seconds for o in outcomes) < OUTAGE_BOUND_SECONDS  # no upload hangs, not even mid-stop
    assert after and all(o.status == 201 for o in after), [(o.status, o.error_code) for o in after]
    assert all(o.status == 201 for o in retried), [(o.status, o.error_code) for o in retried]

    # What is stored: every accepted upload has its row and the row its three objects.
    accepted = {o.photo_id for o in before + outcomes + retried if o.status == 201}
    rows = {str(public_id) for public_id in Photo.objects.values_list("public_id", flat=True)}
    lost = accepted - rows
    assert not lost
    assert Photo.objects.count() == len(accepted)  # one row per upload, retries included
    stored, referenced = _photo_objects(services, s3_prefix), _row_objects()
    assert referenced <= stored, f"rows without objects: {sorted(referenced - stored)}"

    # Objects without rows: uploads the outage cut short between objects whose cleanup could not
    # reach S3 either, plus one upload's objects as a process killed before its commit leaves them.
    killed = uuid.uuid4().hex
    for folder in ("", "display/", "thumbs/"):
        s3_storage.save(f"photos/{challenge.project.slug}/{folder}{killed}.jpg", ContentFile(b"\xff\xd8 cut short"))
    orphans_before = stored - referenced
    sweep = storage_sweep(grace_seconds=0, storage=s3_storage)
    assert set(sweep.orphans) >= orphans_before and sweep.delete_failed == 0 and sweep.missing == []
    assert _photo_objects(services, s3_prefix) == referenced  # orphans after the sweep: none

    # A photo accepted before the outage still downloads, byte for byte, through a presigned URL.
    first = Photo.objects.get(public_id=before[0].photo_id)
    body = requests.get(s3_storage.url(first.image.name), timeout=10).content
    assert hashlib.sha256(body).hexdigest() == first.sha256

    refused_times = seconds_summary(refused)
    fault_report.add(
        fault="S3 stopped during uploads",
        tried=(
            f"{len(before) + len(outcomes)} uploads from 3 threads through gunicorn; radosgw stopped for "
            f"{started - stopping:.1f} s (from stop-s3 to start-s3 answering); every refused upload retried "
            "afterwards with its Idempotency-Key"
        ),
        seen=(
            f"{len(refused)} answered 503 storage_unavailable + Retry-After (JSON), 0 other 5xx, 0 timeouts; "
            f"{len(after)} uploads after start-s3 all 201; {len(retried)} retries all 201"
        ),
        checked=(
            f"{len(rows)} rows, each with its 3 objects; {len(orphans_before)} orphans left by cut-short uploads "
            f"+ 3 planted (killed process) removed by the sweep; orphans after sweep: 0"
        ),
        lost=len(lost),
        outage_answer_p50_s=refused_times["p50"],
        outage_answer_max_s=refused_times["max"],
        outage_seconds=round(started - stopping, 1),
    )
