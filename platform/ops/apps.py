import logging

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health and readiness probes, structured logs, the admin's operations page."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from celery.signals import setup_logging
        from django.contrib import admin

        from ops.logs import celery_setup_logging

        # Workers and beat log through settings.LOGGING (JSON lines in production) instead
        # of Celery's own handlers; Django is set up before Celery sends this signal.
        setup_logging.connect(celery_setup_logging, weak=False, dispatch_uid="ops-logging")
        # Python warnings become log records (logger py.warnings) of the same shape as every
        # other line, instead of raw text on stderr (Django 5 no longer routes them).
        logging.captureWarnings(True)
        # The admin index links to the operations page.
        admin.site.index_template = "admin/ops/site_index.html"
