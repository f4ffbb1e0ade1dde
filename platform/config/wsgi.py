"""WSGI entry point (gunicorn config.wsgi, started from the repo root with PYTHONPATH=platform:.)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
