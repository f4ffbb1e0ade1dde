"""Release health (telemetry aggregates) in the Django admin: read-only, one row per release.

What apps reported (counts, load failure rate, failures by error class, latency
percentiles from the histogram) next to the release's state, and, when the telemetry guard
acted, its reason: the admins see why a rollout stopped.
"""
from __future__ import annotations

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery

from common.admin import ReadOnlyAdmin
from mobile_api.models import ReleaseEvent, ReleaseHealth
from mobile_api.telemetry import latency_percentiles, load_failure_rate

_AUTOMATIC = [ReleaseEvent.Action.AUTO_PAUSE, ReleaseEvent.Action.AUTO_ROLLBACK]


@admin.register(ReleaseHealth)
class ReleaseHealthAdmin(ReadOnlyAdmin):
    list_display = [
        "channel", "version", "state", "rollout", "downloaded", "loaded", "load_failed", "failure_rate",
        "failures", "p50", "p90", "p99", "guard", "updated_at",
    ]
    list_filter = ["release__state", "release__channel__project", "release__channel__name"]
    list_select_related = ["release__channel__project", "release__version"]
    ordering = ["-release__created_at", "-release_id"]
    fields = [
        "release", "downloaded", "loaded", "load_failed", "failure_rate", "failures", "p50", "p90", "p99",
        "latency_histogram", "guard", "updated_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request) -> QuerySet[ReleaseHealth]:
        # The guard's latest reason in the same query as the rows (no query per row).
        latest_automatic = ReleaseEvent.objects.filter(
            release_id=OuterRef("release_id"), action__in=_AUTOMATIC
        ).order_by("-at", "-id")
        return super().get_queryset(request).annotate(
            guard_reason=Subquery(latest_automatic.values("reason")[:1])
        )

    @admin.display(description="Channel", ordering="release__channel__name")
    def channel(self, health: ReleaseHealth) -> str:
        return str(health.release.channel)

    @admin.display(description="Version", ordering="release__version__version")
    def version(self, health: ReleaseHealth) -> int:
        return health.release.version.version

    @admin.display(description="State", ordering="release__state")
    def state(self, health: ReleaseHealth) -> str:
        return health.release.get_state_display()

    @admin.display(description="Rollout", ordering="release__rollout_percent")
    def rollout(self, health: ReleaseHealth) -> str:
        return f"{health.release.rollout_percent}%"

    @admin.display(description="Load failure rate")
    def failure_rate(self, health: ReleaseHealth) -> str:
        rate = load_failure_rate(loaded=health.loaded, load_failed=health.load_failed)
        return "-" if rate is None else f"{rate:.1%}"

    @admin.display(description="Failures by class")
    def failures(self, health: ReleaseHealth) -> str:
        counts = sorted((health.failures_by_class or {}).items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{name} {count}" for name, count in counts) or "-"

    @admin.display(description="p50 ms")
    def p50(self, health: ReleaseHealth) -> str:
        return self._percentile(health, "p50")

    @admin.display(description="p90 ms")
    def p90(self, health: ReleaseHealth) -> str:
        return self._percentile(health, "p90")

    @admin.display(description="p99 ms")
    def p99(self, health: ReleaseHealth) -> str:
        return self._percentile(health, "p99")

    @admin.display(description="Automatic action")
    def guard(self, health: ReleaseHealth) -> str:
        return getattr(health, "guard_reason", None) or "-"

    @staticmethod
    def _percentile(health: ReleaseHealth, name: str) -> str:
        # Bucket upper bounds: "≤ 5" reads as what it is, a bound, not a measurement.
        value = latency_percentiles(health.latency_histogram or {})[name]
        return "-" if value is None else f"≤ {value}"
