"""The production URLconf plus a minimal JSON view: the baseline of bench/update_checks.py.

Never part of config.urls: the baseline exists only to measure what a request costs in
this stack (gunicorn, Django, the production middleware) before any view does work.
"""
from django.http import JsonResponse
from django.urls import include, path


def minimal_json(request):
    """The smallest useful Django JSON view: no database, no cache, no authentication."""
    return JsonResponse({"ok": True})


urlpatterns = [
    path("bench/minimal", minimal_json, name="bench-minimal"),
    path("", include("config.urls")),
]
