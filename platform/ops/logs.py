"""Structured logs: one JSON object per line, with the request or task it belongs to.

Every record of a web request carries ``request_id`` (also sent back in ``X-Request-ID``);
every record written while a Celery task runs carries ``task_id`` and ``task_name``. Nothing
here logs headers, so Authorization, X-App-Key and cookies never reach a log line.
"""
from __future__ import annotations

import contextvars
import logging
from logging.config import dictConfig

from celery import current_task
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class ContextFilter(logging.Filter):
    """Adds the current request id, or the current Celery task's id and name, to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
        if current_task and current_task.request.id:
            record.task_id = current_task.request.id
            record.task_name = current_task.name
        return True


class JsonFormatter(_JsonFormatter):
    """time, level, logger, message, then the record's extras (request_id, task_id, ...).

    Django attaches the HttpRequest to some records (django.request, django.security); it is
    left out: its text holds the query string, and it is no JSON value anyway.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, "request"],
            **kwargs,
        )


def celery_setup_logging(**kwargs) -> None:
    """Celery's setup_logging signal: apply Django's LOGGING, so workers log like the web."""
    from django.conf import settings

    dictConfig(settings.LOGGING)
