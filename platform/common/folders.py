"""The folders the embedded default writes into, created when a process starts Django.

Not at settings import: reading a setting (a tool, a test, `check --deploy` for another
machine) must not write to disk. Every process that uses these folders starts Django first
(`manage.py` commands such as `migrate` on a fresh checkout, gunicorn through config.wsgi,
Celery's worker and beat through its Django fix-up), so `CommonConfig.ready` covers them all.
Production (PostgreSQL, Redis) needs none of them and gets none.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings


def embedded_folders(*, database: dict, broker_url: str, broker_options: dict) -> list[Path]:
    """The folders a SQLite database and a filesystem broker need (none on servers)."""
    folders = []
    if database["ENGINE"] == "django.db.backends.sqlite3" and str(database["NAME"]) != ":memory:":
        # SQLite creates the file but not its folder.
        folders.append(Path(database["NAME"]).parent)
    if broker_url.startswith("filesystem://"):
        # kombu's filesystem transport writes into these folders but never creates them
        # (the control folder only without its parents).
        for name in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if broker_options.get(name):
                folders.append(Path(broker_options[name]))
    return list(dict.fromkeys(folders))


def embedded_folders_create() -> list[Path]:
    """Create the configured embedded default's folders that are missing; return the ones it created."""
    wanted = embedded_folders(
        database=settings.DATABASES["default"],
        broker_url=settings.CELERY_BROKER_URL,
        broker_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    )
    created = [folder for folder in wanted if not folder.is_dir()]
    for folder in created:
        folder.mkdir(parents=True, exist_ok=True)
    return created
