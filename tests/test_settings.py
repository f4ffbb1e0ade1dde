"""The settings module has no side effects and does not know about pytest; processes create their folders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from common.folders import embedded_folders, embedded_folders_create

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, var: Path, **overrides: str) -> subprocess.CompletedProcess:
    """Run ``code`` with the production settings module and only the environment given here."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
           "DJANGO_SETTINGS_MODULE": "config.settings", "PLATFORM_ENV_FILE": "", "PLATFORM_VAR_DIR": str(var),
           "DJANGO_SECRET_KEY": "settings-test", **overrides}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_importing_the_settings_creates_no_folder(tmp_path):
    """A tool that reads a setting (or `check --deploy` for another machine) writes nothing to disk."""
    done = _python("import config.settings as s; print(s.DATABASES['default']['NAME'])", tmp_path / "var")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "var" / "platform.sqlite3")
    assert not (tmp_path / "var").exists()


def test_a_process_starting_django_on_a_fresh_checkout_can_use_the_database_and_the_broker(tmp_path):
    """What migrate, gunicorn and Celery do first: django.setup() makes the embedded default's folders."""
    var = tmp_path / "var"
    done = _python(
        "import django; django.setup()\n"
        "from django.db import connection; connection.ensure_connection()\n"
        "from config.celery import app; app.send_task('nothing.here', queue='light')\n",
        var,
    )
    assert done.returncode == 0, done.stderr
    assert (var / "platform.sqlite3").is_file()
    assert {p.name for p in (var / "broker").iterdir()} == {"queue", "processed", "control"}
    assert len(list((var / "broker" / "queue").iterdir())) == 1  # the message, waiting for a worker


def test_the_settings_ask_for_a_secret_key_even_inside_pytest(tmp_path):
    """No "pytest in sys.modules" switch: a process that imported pytest still needs its secret."""
    done = _python("import pytest, config.settings", tmp_path / "var", DJANGO_SECRET_KEY="", DJANGO_DEBUG="0")
    assert done.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in done.stderr


def test_embedded_folders_are_those_of_sqlite_and_the_filesystem_broker(tmp_path):
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db" / "x.sqlite3")}
    queue, processed, control = (str(tmp_path / "broker" / name) for name in ("q", "p", "c"))
    options = {"data_folder_in": queue, "data_folder_out": queue, "processed_folder": processed,
               "control_folder": control}
    assert embedded_folders(database=database, broker_url="filesystem://", broker_options=options) == [
        tmp_path / "db", Path(queue), Path(processed), Path(control)]
    # On servers (production): nothing to create.
    assert embedded_folders(database={"ENGINE": "django.db.backends.postgresql", "NAME": "platform"},
                            broker_url="redis://127.0.0.1:6379/0", broker_options={}) == []


def test_every_process_start_creates_only_what_is_missing(settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    folders = {name: str(tmp_path / "broker" / name) for name in ("queue", "processed", "control")}
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": folders["queue"], "data_folder_out": folders["queue"],
        "processed_folder": folders["processed"], "control_folder": folders["control"],
    }
    created = embedded_folders_create()
    assert created == [tmp_path / "broker" / name for name in ("queue", "processed", "control")]
    assert embedded_folders_create() == []


def test_the_tests_run_on_their_own_settings_module():
    """Local memory cache and fast hashing come from config/settings_test.py, not from a pytest switch."""
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "config.settings_test"
    if not os.environ.get("CACHE_URL"):
        assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert settings.PASSWORD_HASHERS == ["django.contrib.auth.hashers.MD5PasswordHasher"]
