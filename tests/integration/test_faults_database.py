"""Fault: PostgreSQL restarts while the web process serves uploads and reads.

During the gap every request must fail cleanly and quickly (503, Retry-After, the JSON error
body; never a 500 page, never a hang), and afterwards the same worker processes answer again
by themselves: their dead persistent connections are replaced (CONN_HEALTH_CHECKS).
"""
from __future__ import annotations

import time

import pytest
from django.db import connections
from rest_framework.authtoken.models import Token

from common.storage_sweep import storage_sweep
from submissions.models import Photo, UploadIdempotencyKey
from tests.integration.web_process import Traffic, Volunteer, seconds_summary, web_process

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GAP_BOUND_SECONDS = 10  # any request during the restart is answered within this


def test_postgres_restarts_under_traffic(services, s3_storage, s3_prefix, volunteer, challenge, tmp_path, fault_report):
    token = Token.objects.create(user=volunteer).key
    board = f"/api/v1/projects/{challenge.project.slug}/leaderboards/day/"
    with web_process(services=services, s3_prefix=s3_prefix, tmp_path=tmp_path) as web:
        client = Volunteer(url=web.url, token=token, challenge_id=challenge.pk)
        first = client.upload()
        assert first.status == 201 and client.read(board).status == 200
        workers = web.worker_pids()

        with Traffic(client.upload, client.upload, lambda: client.read(board)) as traffic:
            time.sleep(1.0)
            restarting = time.monotonic()
            try:
                services.control("restart-postgres")
            finally:
                # The restart ended this process's own connection too: later queries (and the
                # other tests) need a new one.
                connections.close_all()
            restarted = time.monotonic()
            recovered = traffic.wait_for(
                lambda seen: sum(o.started > restarted + 1.0 and o.status in (200, 201) for o in seen) >= 4, timeout=20
            )
        outcomes = traffic.snapshot()
        refused = [o for o in outcomes if o.status == 503]
        # The client did what Retry-After says: each refused upload again, same bytes and key.
        retried = client.retry(refused)
        workers_after = web.worker_pids()

    # What the clients saw.
    assert recovered, [(o.status, o.error_code) for o in outcomes[-10:]]
    assert all(o.status in (200, 201, 503) for o in outcomes), {(o.status, o.error_code, o.failure) for o in outcomes}
    assert refused, "no request met the restart: the test did not test anything"
    for o in refused:
        assert o.content_type.startswith("application/json") and o.retry_after and int(o.retry_after) > 0
        assert o.error_code == "database_unavailable", o.error_code
    assert max(o.seconds for o in outcomes) < GAP_BOUND_SECONDS
    after = [o for o in outcomes if o.started > restarted + 1.0]
    assert after and all(o.status in (200, 201) for o in after), [(o.status, o.error_code) for o in after]
    assert workers_after == workers  # recovered by itself: no worker was restarted
    assert all(o.status == 201 for o in retried), [(o.status, o.error_code) for o in retried]

    # What is stored: every upload that got 201 once, with its objects; no duplicates.
    uploads = [first] + [o for o in outcomes if o.kind == "upload"] + retried
    accepted = {o.photo_id for o in uploads if o.status == 201}
    rows = {str(public_id) for public_id in Photo.objects.values_list("public_id", flat=True)}
    lost = accepted - rows
    assert not lost
    keys = {o.key for o in uploads if o.status == 201}
    assert UploadIdempotencyKey.objects.filter(key__in=keys).count() == len(keys)
    assert Photo.objects.count() == len(keys)  # one row per upload, a retry included
    sweep = storage_sweep(grace_seconds=0, storage=s3_storage, dry_run=True)
    assert sweep.missing == [], "rows without their objects"
    assert [name for name in sweep.orphans if name.startswith("photos/")] == [], "objects without rows"

    gap = [o for o in outcomes if o.started >= restarting - 0.5 and o.started <= restarted + 1.0]
    back = min(o.ended for o in outcomes if o.started > restarted and o.status in (200, 201)) - restarted
    refused_reads = sum(o.kind == "read" for o in refused)
    fault_report.add(
        fault="PostgreSQL restarted under traffic",
        tried=(
            f"{len(outcomes)} requests (2 upload threads, 1 leaderboard reader) through gunicorn "
            f"(2 sync workers); pg_ctl restart -m fast took {restarted - restarting:.1f} s; "
            f"every refused upload retried afterwards with its Idempotency-Key"
        ),
        seen=(
            f"{len(refused)} answered 503 database_unavailable + Retry-After (JSON: {len(refused) - refused_reads} "
            f"uploads, {refused_reads} reads), 0 500s, 0 timeouts; first 200/201 {back:.1f} s after the restart, "
            f"every request from 1 s after it on 200/201, same worker processes; {len(retried)} retried uploads all 201"
        ),
        checked=f"{len(rows)} rows, one per upload key, each with its 3 objects; orphans: 0",
        lost=len(lost),
        gap_answer_p50_s=seconds_summary(gap)["p50"],
        gap_answer_max_s=seconds_summary(gap)["max"],
        restart_seconds=round(restarted - restarting, 1),
        recovered_after_s=round(back, 2),
    )
