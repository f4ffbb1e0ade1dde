"""Fixtures for tests against the real servers that scripts/test starts on loopback."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAULT_REPORT = ROOT / "bench" / "results" / "faults.json"

REQUIRED = ("DATABASE_URL", "TEST_REDIS_URL", "TEST_S3_ENDPOINT_URL", "TEST_S3_ACCESS_KEY_ID",
            "TEST_S3_SECRET_ACCESS_KEY", "TEST_S3_REGION", "TEST_S3_BUCKET")


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    s3_bucket: str
    # The folder scripts/services.sh started them in: fault tests stop and start them there.
    services_dir: str = ""

    def control(self, command: str) -> None:
        """Stop or start one server (stop-s3, start-s3, stop-redis, start-redis, restart-postgres)."""
        if not self.services_dir:
            pytest.fail("SERVICES_DIR is not set; fault tests need the servers of scripts/test")
        subprocess.run(
            [str(ROOT / "scripts" / "services.sh"), command, self.services_dir],
            check=True, capture_output=True, timeout=180,
        )

    def boto3_client(self, *, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=secret_key or self.s3_secret_key,
            region_name=self.s3_region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def storage_env(self, *, prefix: str) -> dict[str, str]:
        """Environment for a process (a Celery worker) that uses the same S3 storage."""
        return {
            "STORAGE_BACKEND": "s3",
            "AWS_STORAGE_BUCKET_NAME": self.s3_bucket,
            "AWS_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_S3_REGION_NAME": self.s3_region,
            "AWS_S3_LOCATION": prefix,
        }


@pytest.fixture(scope="session")
def services() -> Services:
    """The loopback servers; a missing one fails the run under scripts/test, else skips."""
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing or not os.environ["DATABASE_URL"].startswith("postgres"):
        message = f"needs the servers started by scripts/test (missing: {', '.join(missing) or 'PostgreSQL'})"
        if os.environ.get("PLATFORM_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return Services(
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ["TEST_REDIS_URL"],
        s3_endpoint=os.environ["TEST_S3_ENDPOINT_URL"],
        s3_access_key=os.environ["TEST_S3_ACCESS_KEY_ID"],
        s3_secret_key=os.environ["TEST_S3_SECRET_ACCESS_KEY"],
        s3_region=os.environ["TEST_S3_REGION"],
        s3_bucket=os.environ["TEST_S3_BUCKET"],
        services_dir=os.environ.get("SERVICES_DIR", ""),
    )


@pytest.fixture
def redis_cache(settings, services):
    """Django's cache on the real Redis, as production runs it (throttles, rate limits, app keys).

    A database of its own (15), emptied before and after: a cache.clear() here must not
    flush the broker queues that other tests keep in database 0.
    """
    from django.core.cache import cache

    from mobile_api import auth, update

    base = services.redis_url.rsplit("/", 1)[0]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"{base}/15"}}
    from django.core.cache import caches

    assert type(caches["default"]).__name__ == "RedisCache"  # the settings change reached the cache
    cache.clear()
    update.memo_clear()
    auth.app_memo_clear()
    auth.rate_limit_forget()
    yield cache
    cache.clear()


@dataclass
class FaultReport:
    """What each fault test did and what it found afterwards; bench/faults.py prints it.

    One row per fault: what was broken, what the clients saw, what the data check found,
    and how many accepted items were lost (the claim is: none).
    """

    rows: dict[str, dict] = field(default_factory=dict)

    def add(self, *, fault: str, tried: str, seen: str, checked: str, lost: int, **figures) -> None:
        self.rows[fault] = {"fault": fault, "tried": tried, "seen": seen, "checked": checked,
                            "lost": lost, **figures}


@pytest.fixture(scope="session")
def fault_report():
    """Rows added by fault tests are merged into bench/results/faults.json at the end."""
    report = FaultReport()
    yield report
    if report.rows:
        earlier = json.loads(FAULT_REPORT.read_text()) if FAULT_REPORT.is_file() else {}
        FAULT_REPORT.parent.mkdir(parents=True, exist_ok=True)
        FAULT_REPORT.write_text(json.dumps({**earlier, **report.rows}, indent=2) + "\n")


@pytest.fixture
def s3_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_storage(settings, services, s3_prefix):
    """Switch Django's default storage to the real S3 server, under a per-test prefix."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": services.s3_bucket,
                "endpoint_url": services.s3_endpoint,
                "access_key": services.s3_access_key,
                "secret_key": services.s3_secret_key,
                "region_name": services.s3_region,
                "signature_version": "s3v4",
                "addressing_style": "path",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 60,
                "file_overwrite": False,
                "location": s3_prefix,
            },
        },
    }
    from django.core.files.storage import default_storage

    return default_storage
