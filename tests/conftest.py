"""Shared fixtures: isolated storage, eager Celery, API clients, real photos."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image
from rest_framework.test import APIClient

from tests.factories import ChallengeFactory, LabelFactory, ProjectFactory, UserFactory

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HYMENOPTERA = Path(os.environ.get("PLATFORM_TEST_HYMENOPTERA", SHARED / "hymenoptera"))
WEIGHTS = Path(os.environ.get("PLATFORM_TEST_WEIGHTS", SHARED / "weights" / "mobilenet_v2_imagenet_from_keras.pth"))


def _skip_is_a_failure() -> bool:
    """Under scripts/test (PLATFORM_REQUIRE_SERVICES=1) a skipped test counts as a failure."""
    return bool(os.environ.get("PLATFORM_REQUIRE_SERVICES"))


def _fail_the_skip(report) -> None:
    """Turn a skipped report into a failed one that names the skip's reason."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under scripts/test, which must run every test: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip mark, pytest.skip() or importorskip in a test or fixture fails the run under scripts/test."""
    report = yield
    if _skip_is_a_failure():
        _fail_the_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import time (importorskip at the top) fails the same way."""
    report = yield
    if _skip_is_a_failure():
        _fail_the_skip(report)
    return report


@pytest.fixture(autouse=True)
def _local_storage(settings, tmp_path):
    """Every test writes to its own media folder (S3 tests switch to the real server)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    settings.VAR_DIR = tmp_path / "var"
    return tmp_path / "media"


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttles, app keys and channel documents live in caches that outlive a test: start from zero."""
    from django.core.cache import cache

    from mobile_api import auth, update

    def clear():
        cache.clear()
        update.memo_clear()
        auth.app_memo_clear()
        auth.rate_limit_forget()

    clear()
    yield
    clear()


@pytest.fixture(autouse=True)
def _eager_celery():
    """Tasks run in-process in unit tests; the end-to-end test uses a real worker."""
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def media_files(_local_storage) -> list[Path]:
    """Callable listing every stored file (to prove nothing was stored)."""
    return lambda: sorted(p for p in _local_storage.rglob("*") if p.is_file())


@pytest.fixture
def volunteer(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def volunteer_api(volunteer) -> APIClient:
    client = APIClient()
    client.force_authenticate(volunteer)
    return client


@pytest.fixture
def staff_api(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def admin_client(client, staff):
    """A browser session of `staff` as a superuser (pytest-django's own logs in someone else)."""
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    return client


@pytest.fixture
def project(db):
    project = ProjectFactory(slug="ants-bees")
    LabelFactory(project=project, name="ants")
    LabelFactory(project=project, name="bees")
    return project


@pytest.fixture
def challenge(project):
    from challenges.selectors import project_today

    challenge = ChallengeFactory(project=project, day=project_today(project=project))
    challenge.labels.set(project.labels.all())
    return challenge


@pytest.fixture
def weights_path(settings) -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"pretrained weights not found at {WEIGHTS}")
    settings.PLATFORM_WEIGHTS_PATH = str(WEIGHTS)
    return WEIGHTS


@pytest.fixture
def hymenoptera() -> Path:
    if not (HYMENOPTERA / "train").is_dir():
        pytest.skip(f"ants/bees photos not found at {HYMENOPTERA}")
    return HYMENOPTERA


def jpeg_bytes(size=(64, 48), color=(200, 30, 30), **save_kwargs) -> bytes:
    """A small real JPEG."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG", **save_kwargs)
    return out.getvalue()
