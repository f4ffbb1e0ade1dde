"""Fixtures for tests against the real servers that scripts/test starts on loopback."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

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
    )


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
