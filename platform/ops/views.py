"""Probes for load balancers and process managers, and the admin's operations page."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from ops.selectors import (
    backlog_thresholds,
    broker_overview,
    distributions_unfinished,
    nightly_runs_latest,
    readiness_checks,
    releases_live,
)

RETRY_AFTER_SECONDS = 10


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches no dependency, so an outage never restarts it."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: database, broker and storage answer; 503 naming the failed check otherwise."""
    checks = readiness_checks()
    ready = all(check["ok"] for check in checks.values())
    response = JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                            status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def ops_page(request: HttpRequest) -> HttpResponse:
    """Staff only (wrapped in admin.site.admin_view in urls.py): what an operator looks at first."""
    checks = readiness_checks()
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "checks": checks,
        "ready": all(check["ok"] for check in checks.values()),
        "broker": broker_overview(),
        "nightly": nightly_runs_latest(),
        "releases": releases_live(),
        "distributions": distributions_unfinished(),
        "backlog": backlog_thresholds(),
    }
    return TemplateResponse(request, "admin/ops/index.html", context)
