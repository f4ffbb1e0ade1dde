"""A filesystem broker of the test's own, so queue depths start at zero and nothing lingers."""
from __future__ import annotations

import pytest

from config.celery import app


@pytest.fixture
def tmp_broker(tmp_path, monkeypatch):
    """Point the platform's Celery app at kombu's filesystem transport under tmp_path."""
    folders = {name: tmp_path / "broker" / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # it would win over app.conf
    monkeypatch.setitem(app.conf, "broker_url", "filesystem://")
    monkeypatch.setitem(app.conf, "broker_transport_options", {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    })
    return folders["queue"]


@pytest.fixture
def enqueue(tmp_broker, monkeypatch):
    """Send a task by name through the broker (no worker runs), routed as the platform routes it."""
    monkeypatch.setitem(app.conf, "task_always_eager", False)

    def send(name: str, *args) -> None:
        with app.connection_for_write() as conn:
            app.send_task(name, args=args, connection=conn)

    return send
