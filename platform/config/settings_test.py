"""Settings of the test suite (pytest.ini): the one settings module, with what tests need.

The services tests (PLATFORM_REQUIRE_SERVICES=1, scripts/test) still take DATABASE_URL,
CELERY_BROKER_URL, CACHE_URL and the AWS_* variables from the environment. Processes that
tests start (gunicorn, Celery workers, manage.py) run the production module, config.settings,
with only the environment the test gives them.
"""
import os
from unittest import mock

# While the base module reads the environment: a developer's .env must not leak into the
# tests, and there is no secret to keep (both only when the environment does not say).
_TEST_ENVIRONMENT = {"PLATFORM_ENV_FILE": "", "DJANGO_SECRET_KEY": "insecure-test-key-never-use-in-production"}
with mock.patch.dict(os.environ, {k: v for k, v in _TEST_ENVIRONMENT.items() if k not in os.environ}):
    from config.settings import *  # noqa: F403
    from config.settings import STORAGES, env

# Local memory, cleared around each test (tests/conftest.py), unless CACHE_URL says otherwise
# (tests/integration/test_redis_limits.py runs the limits on Redis).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# No collectstatic before the tests: the plain storage (whitenoise's manifest needs one).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
# Factories and sign-ups hash passwords; PBKDF2 would dominate the suite's runtime.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
