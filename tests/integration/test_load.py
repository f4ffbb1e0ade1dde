"""A short mixed load on the real stack (bench/load_mixed.py for 15 s): nothing fails, nothing is lost.

gunicorn and a light Celery worker on a fresh database of the test PostgreSQL, Redis as
broker and cache, radosgw as storage; client threads upload photos, poll for updates and
read the leaderboard and the gallery at once. Takes about a minute (setup included).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.load_mixed import load_run, report_print

pytestmark = [pytest.mark.services, pytest.mark.slow]

SECONDS = 15
# Generous for a short run on shared cores: a leak of a model session or a decoded photo per
# task grows the worker by far more than this over the second half.
MAX_WORKER_GROWTH_MB = 64


def test_mixed_load_answers_every_request_and_loses_no_upload(services):
    if not services.services_dir:
        pytest.fail("SERVICES_DIR is not set; the load test needs the servers of scripts/test")
    # Fewer seed photos and one warm-up round than the bench: the checks need no more.
    result = load_run(services_dir=Path(services.services_dir), seconds=SECONDS, drain_seconds=60, seed_photos=4,
                      warm_up_rounds=1)
    report_print(result)

    rows = {row["type"]: row for row in result["rows"]}
    assert result["total"]["5xx"] == 0 and result["total"]["errors"] == 0, rows
    # Every type had requests answered as it should be (201 uploads, 304 revalidations, ...).
    assert all(row["ok"] > 0 for row in rows.values()), {t: row["statuses"] for t, row in rows.items()}
    uploads = result["uploads"]
    assert uploads["accepted"] >= rows["upload"]["ok"] > 0
    assert uploads["checked"] == uploads["accepted"] and uploads["lost"] == 0, uploads["lost_examples"]
    # The worker kept up: every accepted photo was scored with the published model.
    assert result["followups"]["drained"], result["followups"]
    growth = result["memory"]["worker"]["second_half_growth_mb"]
    assert growth is not None and growth < MAX_WORKER_GROWTH_MB, result["memory"]["worker"]
