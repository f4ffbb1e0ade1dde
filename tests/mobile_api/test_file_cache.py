"""What uses the cache works on the embedded default's cache, a folder every process shares.

The suite runs on local memory; these tests run the same checks on Django's file-based
cache, as scripts/run configures it (tests/integration/test_embedded_default.py runs it
across real processes). About 3 s.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.core.cache import cache

from mobile_api import auth, update
from tests.mobile_api.test_downloads import published  # noqa: F401 (a fixture)
from tests.mobile_api.test_downloads import test_downloads_are_rate_limited_per_install as downloads_rate_limited
from tests.security.test_production_settings import ROOT, _environment
from tests.submissions.test_upload_features import test_burst_throttle_is_429_with_retry_after as upload_throttled

pytestmark = pytest.mark.django_db


@pytest.fixture
def file_cache(settings, tmp_path):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                   "LOCATION": str(tmp_path / "cache")}}
    update.memo_clear()
    auth.app_memo_clear()
    yield tmp_path / "cache"
    cache.clear()


def test_the_embedded_default_is_a_shared_folder_unless_configured(tmp_path):
    """Outside the tests, without CACHE_URL: the file cache under the var folder."""
    code = "import json, config.settings as s; print(json.dumps(s.CACHES['default']))"
    for env, expected in (({}, ("FileBasedCache", str(tmp_path / "var" / "cache"))),
                          ({"CACHE_URL": "redis://127.0.0.1:6379/1"}, ("RedisCache", None))):
        done = subprocess.run([sys.executable, "-c", code], env=_environment(tmp_path, **env), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        backend = json.loads(done.stdout.strip().splitlines()[-1])
        assert backend["BACKEND"].rsplit(".", 1)[-1] == expected[0]
        if expected[1]:
            assert backend["LOCATION"] == expected[1]


def test_the_upload_throttle_counts_in_the_shared_folder(file_cache, volunteer_api, challenge, settings):
    upload_throttled(volunteer_api, challenge, settings)
    assert any(file_cache.iterdir())  # the counters are files every process reads


def test_download_rate_limits_count_in_the_shared_folder(file_cache, app_key, app_api, published):
    downloads_rate_limited(app_key, app_api, published)
