"""Admin for the training app: runs (progress, decision, gate, pictures, cancel), policies, registry."""
import json

from django.contrib import admin, messages
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingPolicy, TrainingRun
from training.services import training_run_cancel_request


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id", "project", "night", "trigger", "status", "stage", "progress_percent", "gate_outcome",
        "cancel_requested", "started_at", "finished_at",
    ]
    list_filter = ["project", "status", "trigger"]
    actions = ["cancel_runs"]
    _shown = ["progress_percent", "decision_record", "gate_result", "pictures"]
    readonly_fields = _shown + [field.name for field in TrainingRun._meta.fields]
    fieldsets = [
        (None, {"fields": ["project", "night", "trigger", "status", "stage", "progress_percent", "message",
                           "cancel_requested", "requested_by", "worker", "started_at", "heartbeat_at",
                           "finished_at", "snapshot"]}),
        ("Decision", {"fields": ["decision_record"]}),
        ("Champion / challenger gate", {"fields": ["gate_result"]}),
        ("Holdout and training curve", {"fields": ["pictures"]}),
        ("Raw records", {"classes": ["collapse"], "fields": ["decision", "gate", "config", "metrics", "history"]}),
    ]

    @admin.display(description="Progress")
    def progress_percent(self, run: TrainingRun) -> str:
        return f"{run.progress:.0%}"

    @admin.display(description="Gate")
    def gate_outcome(self, run: TrainingRun) -> str:
        return (run.gate or {}).get("outcome", "")

    @admin.display(description="Decision record")
    def decision_record(self, run: TrainingRun) -> str:
        if not run.decision:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(run.decision, indent=2, sort_keys=True))

    @admin.display(description="Gate result")
    def gate_result(self, run: TrainingRun) -> str:
        gate = run.gate or {}
        if not gate:
            return "-"
        champion, candidate = gate.get("champion") or {}, gate.get("candidate") or {}
        rows = [("accuracy", _score(champion.get("accuracy")), _score(candidate.get("accuracy")))]
        for label in (gate.get("compared") or {}).get("labels", []):
            rows.append(
                (f"recall {label}", _score((champion.get("recall") or {}).get(label)),
                 _score((candidate.get("recall") or {}).get(label)))
            )
        table = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows) if candidate else ""
        return format_html(
            "<p><b>{}</b>: {}</p><table><tr><th></th><th>release v{}</th><th>candidate</th></tr>{}</table>"
            "<p>Tolerance: overall {}, per label {}</p>",
            gate.get("outcome", ""), gate.get("reason", ""), champion.get("version", "-"), table,
            (gate.get("tolerance") or {}).get("overall", "-"), (gate.get("tolerance") or {}).get("per_label", "-"),
        )

    @admin.display(description="Pictures")
    def pictures(self, run: TrainingRun) -> str:
        if not run.pk or not (run.metrics.get("confusion") or run.history):
            return "-"
        images = []
        if run.metrics.get("confusion"):
            images.append(reverse("admin:training_trainingrun_confusion", args=[run.pk]))
        if run.history:
            images.append(reverse("admin:training_trainingrun_curve", args=[run.pk]))
        return format_html_join(" ", '<img src="{}" alt="" style="max-width: 45%">', ((url,) for url in images))

    @admin.action(description="Cancel selected runs (running ones stop at their next progress report)")
    def cancel_runs(self, request, queryset):
        runs = list(queryset)
        asked = training_run_cancel_request(runs=runs, user=request.user)
        for run in runs:
            if run.pk in asked:  # who asked, in the admin's history of the run
                self.log_change(request, run, "Asked the run to stop.")
        level = messages.SUCCESS if asked else messages.WARNING
        self.message_user(request, f"Asked {len(asked)} running run(s) to stop; finished runs are left alone.", level)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:run_id>/confusion.png", view(self.confusion_view), name="training_trainingrun_confusion"),
            path("<int:run_id>/curve.png", view(self.curve_view), name="training_trainingrun_curve"),
        ] + super().get_urls()

    def confusion_view(self, request, run_id: int) -> HttpResponse:
        """The holdout confusion matrix of the run (the torch model's), drawn from its stored metrics."""
        from training.charts import confusion_png

        run = self._run_for(request, run_id)
        confusion = run.metrics.get("confusion")
        if not confusion:
            raise Http404("This run has no holdout metrics.")
        png = confusion_png(confusion=confusion, labels=run.metrics.get("labels") or [], title=f"Run {run.pk} holdout")
        return HttpResponse(png, content_type="image/png")

    def curve_view(self, request, run_id: int) -> HttpResponse:
        """The training curve of the run, drawn from its stored history."""
        from training.charts import curve_png

        run = self._run_for(request, run_id)
        if not run.history:
            raise Http404("This run has no training history.")
        best_epoch = ((run.config.get("pipeline") or {}).get("probe_outcome") or {}).get("best_epoch")
        png = curve_png(history=run.history, best_epoch=best_epoch, title=f"Run {run.pk} training")
        return HttpResponse(png, content_type="image/png")

    def _run_for(self, request, run_id: int) -> TrainingRun:
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is None or not self.has_view_permission(request, run):
            raise Http404("No such run.")
        return run

    def has_add_permission(self, request):
        return False


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


@admin.register(TrainingPolicy)
class TrainingPolicyAdmin(admin.ModelAdmin):
    """Per-project overrides; each run records the one in force in its decision."""

    list_display = ["project", "strategy_override", "updated_at"]
    list_select_related = ["project"]
    fields = ["project", "strategy_override", "note"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "photo_count", "manifest_sha256", "created_at"]
    readonly_fields = [field.name for field in DatasetSnapshot._meta.fields]

    def has_add_permission(self, request):
        return False


class ModelArtifactInline(admin.TabularInline):
    model = ModelArtifact
    extra = 0
    readonly_fields = ["format", "precision", "file", "size", "sha256", "verification"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: shown, never edited."""

    list_display = ["project", "version", "created_at", "accuracy"]
    list_filter = ["project"]
    readonly_fields = [field.name for field in ModelVersion._meta.fields]
    inlines = [ModelArtifactInline]

    @admin.display(description="Holdout accuracy")
    def accuracy(self, version: ModelVersion) -> str:
        return f"{version.metrics.get('accuracy', 0):.3f}"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
