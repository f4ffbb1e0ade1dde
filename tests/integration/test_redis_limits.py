"""Throttles and rate limits on the Redis cache that production uses, not only in process memory.

The same tests as next to each feature (they import here and run again), with Django's cache
on the real Redis server: DRF's upload, login and sign-up throttles, the upload quota, and
the per-key, per-install limits of the app endpoints (downloads, feedback, telemetry, update
checks; an update check counts in process memory by design, but finds its app key through
the cache). A counter that only worked in local memory (an incr that Redis refuses, a key
that does not expire, a value that does not survive pickling) fails here.
"""
from __future__ import annotations

import pytest

from tests.mobile_api.conftest import app_api, app_key, make_version  # noqa: F401  (fixtures)
from tests.mobile_api.test_downloads import (
    published,  # noqa: F401
    test_downloads_are_rate_limited_per_install,  # noqa: F401
)
from tests.mobile_api.test_feedback import (
    test_floods_are_rate_limited_per_key_and_install as test_feedback_is_rate_limited_per_key_and_install,  # noqa: F401
)
from tests.mobile_api.test_telemetry import stable, staged  # noqa: F401
from tests.mobile_api.test_telemetry import (
    test_floods_are_rate_limited_per_key_and_install as test_telemetry_is_rate_limited_per_key_and_install,  # noqa: F401
)
from tests.mobile_api.test_update import released  # noqa: F401
from tests.mobile_api.test_update import test_floods_get_429_with_retry_after as test_update_checks_get_429  # noqa: F401
from tests.security.test_login_limits import (  # noqa: F401
    test_sign_ups_share_one_budget_per_address_between_page_and_api,
    test_the_token_api_has_a_per_address_budget_that_forged_headers_do_not_reset,
)
from tests.submissions.test_upload_features import (  # noqa: F401
    test_burst_throttle_is_429_with_retry_after,
    test_daily_quota_is_429_until_the_projects_midnight,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _on_redis(redis_cache):
    """Every test here counts in Redis."""
    yield redis_cache


def test_a_limit_counts_in_redis_where_every_process_sees_it(redis_cache, app_key, api, released):
    """The counter is a Redis key that expires with its window: another process shares it."""
    import redis
    from django.conf import settings

    row, key = app_key
    row.rate_limit_per_minute = 2
    row.save()
    url = "/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32"
    api.credentials(HTTP_X_APP_KEY=key)
    assert api.get(url, HTTP_X_INSTALL_ID="install-redis01").status_code in (200, 404)
    server = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    counters = [k for k in server.keys("*") if b"rl:download:" in k]
    assert len(counters) == 1 and 0 < server.ttl(counters[0]) <= 61
