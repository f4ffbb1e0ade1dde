"""Admin for the training app: runs (progress, decision, gate, pictures, model card, cancel), policies, registry."""
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from challenges.models import Project
from common.errors import DomainError
from training.charts import candidate_score
from training.imports import ImportRequest, labels_parse, model_version_import, triple_parse
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingPolicy, TrainingRun
from training.release_notes import accuracy_interval
from training.runs import training_run_cancel_request


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id", "project", "night", "trigger", "status", "stage", "progress_percent", "gate_outcome",
        "cancel_requested", "started_at", "finished_at",
    ]
    list_filter = ["project", "status", "trigger"]
    actions = ["cancel_runs"]
    _shown = [
        "outcome", "progress_percent", "candidates_table", "decision_record", "gate_result", "pictures",
        "card_section",
    ]
    readonly_fields = _shown + [field.name for field in TrainingRun._meta.fields]
    # The outcome and the pictures lead; the records they come from are folded away below.
    fieldsets = [
        ("Outcome", {"fields": ["outcome"]}),
        ("Candidates, holdout and training curve", {"fields": ["candidates_table", "pictures"]}),
        ("Champion / challenger gate", {"fields": ["gate_result"]}),
        ("Model card", {"fields": ["card_section"]}),
        ("Decision record", {"fields": ["decision_record"]}),
        ("Run", {"classes": ["collapse"],
                 "fields": ["project", "night", "trigger", "status", "stage", "progress_percent", "message",
                            "cancel_requested", "requested_by", "worker", "started_at", "heartbeat_at",
                            "finished_at", "snapshot"]}),
        ("Raw records", {"classes": ["collapse"],
                         "fields": ["decision", "gate", "config", "metrics", "history", "model_card"]}),
    ]

    @admin.display(description="Outcome")
    def outcome(self, run: TrainingRun) -> str:
        """Status and message, the holdout accuracy with its n and interval, the gate in one line."""
        accuracy, count, interval = accuracy_interval(run.metrics)
        figure = (
            format_html("holdout accuracy <b>{}</b> {}", f"{accuracy:.3f}", _interval_text(interval, count))
            if accuracy is not None else "no holdout accuracy"
        )
        gate = run.gate or {}
        return format_html(
            '<p style="font-size: 1.2em"><b>{}</b>: {}</p><p>{}; strategy {}; gate {}</p>',
            run.get_status_display(), run.message or "-", figure,
            (run.decision or {}).get("strategy") or "-", gate.get("outcome") or "-",
        )

    @admin.display(description="Candidates")
    def candidates_table(self, run: TrainingRun) -> str:
        """Every strategy the run tried (decision record's ``candidates``) with its interval and cost."""
        candidates = (run.decision or {}).get("candidates") or []
        if not candidates:
            return "-"
        chosen = (run.decision or {}).get("strategy")
        rows = []
        for c in candidates:
            value, ci95, n, skipped = candidate_score(c)
            rows.append((
                c.get("strategy", ""), "\u2605" if c.get("strategy") == chosen else "",
                _number(value), _interval_text(ci95, n), _number(c.get("seconds"), "{:.1f}"), skipped or "",
            ))
        body = format_html_join("", "<tr>" + "<td>{}</td>" * 6 + "</tr>", rows)
        return format_html(
            "<table><thead><tr><th>strategy</th><th>shipped</th><th>cross-validated accuracy</th>"
            "<th>95% interval</th><th>seconds</th><th>skipped because</th></tr></thead><tbody>{}</tbody></table>"
            '<p><img src="{}" alt="cross-validated accuracy of every candidate with its 95% interval" '
            'style="width: 720px; max-width: 100%"></p>',
            body, reverse("admin:training_trainingrun_candidates", args=[run.pk]),
        )

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
        return format_html(
            "<p>{}</p><details><summary>The decision record (JSON)</summary><pre>{}</pre></details>",
            run.decision.get("reason") or "", json.dumps(run.decision, indent=2, sort_keys=True),
        )

    @admin.display(description="Gate result")
    def gate_result(self, run: TrainingRun) -> str:
        gate = run.gate or {}
        if not gate:
            return "-"
        champion, candidate = gate.get("champion") or {}, gate.get("candidate") or {}
        paired = gate.get("paired") or {}
        rows = [(
            "accuracy", _scored(champion, "accuracy", None), _scored(candidate, "accuracy", None),
            _paired_text(paired.get("overall")),
        )]
        for label in (gate.get("compared") or {}).get("labels", []):
            rows.append((
                f"recall {label}", _scored(champion, "recall", label), _scored(candidate, "recall", label),
                _paired_text((paired.get("per_label") or {}).get(label)),
            ))
        table = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows) if candidate else ""
        return format_html(
            "<p><b>{}</b>: {}</p><table><tr><th></th><th>release v{}</th><th>candidate</th>"
            "<th>candidate minus release, paired (95% CI; photos only one got right; exact p)</th></tr>{}</table>"
            "<p>Tolerance: overall {}, per label {}. {}</p>",
            gate.get("outcome", ""), gate.get("reason", ""), champion.get("version", "-"), table,
            (gate.get("tolerance") or {}).get("overall", "-"), (gate.get("tolerance") or {}).get("per_label", "-"),
            gate.get("rule", ""),
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
        # Readable: each picture at its drawn width (900 px), one under the other.
        return format_html_join(
            "", '<p><img src="{}" alt="" style="width: 900px; max-width: 100%"></p>', ((url,) for url in images)
        )

    @admin.display(description="Model card")
    def card_section(self, run: TrainingRun) -> str:
        if not run.pk or not run.model_card:
            return "-"
        return card_html(
            run.model_card,
            chart_url=reverse("admin:training_trainingrun_card_chart", args=[run.pk]),
            json_url=reverse("admin:training_trainingrun_card_json", args=[run.pk]),
        )

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
            path("<int:run_id>/card.png", view(self.card_chart_view), name="training_trainingrun_card_chart"),
            path("<int:run_id>/card.json", view(self.card_json_view), name="training_trainingrun_card_json"),
            path("<int:run_id>/candidates.png", view(self.candidates_view), name="training_trainingrun_candidates"),
        ] + super().get_urls()

    def candidates_view(self, request, run_id: int) -> HttpResponse:
        """Cross-validated accuracy of every candidate with its 95% interval, drawn from the decision."""
        from training.charts import candidates_png

        run = self._run_for(request, run_id)
        candidates = (run.decision or {}).get("candidates")
        if not candidates:
            raise Http404("This run compared no candidates.")
        png = candidates_png(candidates=candidates, chosen=run.decision.get("strategy"), title=f"Run {run.pk} candidates")
        return HttpResponse(png, content_type="image/png")

    def card_chart_view(self, request, run_id: int) -> HttpResponse:
        """Size and latency against accuracy of every file the run measured."""
        run = self._run_for(request, run_id)
        return _card_chart_response(run.model_card, title=f"Run {run.pk} model card")

    def card_json_view(self, request, run_id: int) -> HttpResponse:
        """The run's model card as JSON."""
        return _card_json_response(self._run_for(request, run_id).model_card)

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

    # A run is a record: shown, never added, edited or deleted (the cancel action stays).
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _interval_text(ci95, n) -> str:
    """"(95% CI 0.81-0.95, n=61)"; what is unknown is left out."""
    parts = []
    if ci95:
        parts.append(f"95% CI {ci95[0]:.3f}-{ci95[1]:.3f}")
    if n is not None:
        parts.append(f"n={n}")
    return f"({', '.join(parts)})" if parts else ""


def _scored(scores: dict, key: str, label: str | None) -> str:
    """A gate score with its interval and n (older records without them: the bare number)."""
    if label is None:
        value, ci95, n = scores.get("accuracy"), scores.get("accuracy_ci95"), scores.get("count")
    else:
        value = (scores.get(key) or {}).get(label)
        ci95, n = (scores.get("recall_ci95") or {}).get(label), (scores.get("support") or {}).get(label)
    return "-" if value is None else f"{value:.3f} {_interval_text(ci95, n)}".strip()


def _paired_text(compared: dict | None) -> str:
    if not compared:
        return "-"
    low, high = compared["ci95"]
    return (
        f"{compared['difference']:+.3f} ({low:+.3f} to {high:+.3f}); candidate {compared['a_only']}, "
        f"release {compared['b_only']} of {compared['n']}; p={compared['p_value']:.3g}"
    )


def _number(value, pattern: str = "{:.3f}", scale: float = 1.0) -> str:
    return "-" if value is None else pattern.format(value * scale)


_CARD_COLUMNS = (
    "variant", "format", "precision", "status", "recommended", "size MB", "size ratio", "accuracy (n)",
    "loss (points)", "agreement (holdout)", "disagree / photos (holdout + views)", "upper 95%", "log-loss +",
    "max prob diff", "mean KL", "latency ms", "latency ratio", "peak MB", "reason",
)


def card_html(card: dict, *, chart_url: str, json_url: str) -> str:
    """A model card as an HTML table plus its chart; every value is escaped (format_html_join)."""
    float_model, policy = card.get("float") or {}, card.get("policy") or {}
    rows = (
        (
            row.get("variant", ""), row.get("format", ""), row.get("precision", ""), row.get("status", ""),
            "\u2605" if row.get("recommended") else "",
            _number(row.get("size"), "{:.2f}", 1e-6), _number(row.get("size_ratio"), "{:.2f}"),
            _number(row.get("accuracy")) + (f" (n={row['accuracy_n']})" if row.get("accuracy_n") else ""),
            _number(row.get("accuracy_loss"), "{:.2f}", 100.0),
            _number(row.get("top1_agreement")), _fidelity_counts(row.get("fidelity")),
            _number((row.get("fidelity") or {}).get("upper95"), "{:.2%}"),
            _number(row.get("log_loss_increase"), "{:+.4f}"), _number(row.get("max_prob_diff"), "{:.4f}"),
            _number((row.get("fidelity") or {}).get("mean_kl"), "{:.5f}"),
            _number(row.get("latency_ms"), "{:.1f}"), _number(row.get("latency_ratio"), "{:.2f}"),
            _number(row.get("peak_memory_mb"), "{:.0f}"), row.get("reason", ""),
        )
        for row in card.get("variants") or []
    )
    cells = "".join("<td>{}</td>" for _ in _CARD_COLUMNS)
    body = format_html_join("", "<tr>" + cells + "</tr>", rows)
    head = format_html_join("", "<th>{}</th>", ((name,) for name in _CARD_COLUMNS))
    return format_html(
        "<p>Float model: holdout accuracy {} {}, latency {} ms ({} thread(s)); allowed loss {} points, "
        "minimum agreement {}, disagreement at most {} (upper 95% bound); published: {}. "
        "<a href=\"{}\">card.json</a></p>"
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>"
        '<p><img src="{}" alt="size and latency against holdout accuracy" style="max-width: 100%"></p>',
        _number(float_model.get("accuracy")), _interval_text(float_model.get("accuracy_ci95"), card.get("holdout_count")),
        _number(float_model.get("latency_ms"), "{:.1f}"),
        float_model.get("threads", "-"), _number(policy.get("max_accuracy_loss"), "{:.2f}", 100.0),
        policy.get("min_agreement", "-"), _number(policy.get("max_disagreement"), "{:.1%}"),
        "yes" if card.get("published") else "no", json_url,
        head, body, chart_url,
    )


def _fidelity_counts(fidelity: dict | None) -> str:
    """"0 / 61 (0 / 25 + 0 / 36)": disagreements with the float model and the photos they rest on."""
    if not fidelity or not fidelity.get("n"):
        return "-"
    holdout, views = fidelity.get("holdout") or {}, fidelity.get("views") or {}
    return (
        f"{fidelity['disagreements']} / {fidelity['n']} ({holdout.get('disagreements', 0)} / {holdout.get('n', 0)}"
        f" + {views.get('disagreements', 0)} / {views.get('n', 0)})"
    )


def _card_chart_response(card: dict, *, title: str) -> HttpResponse:
    from training.charts import card_chart_png

    if not card:
        raise Http404("No model card.")
    return HttpResponse(card_chart_png(card, title=title), content_type="image/png")


def _card_json_response(card: dict) -> HttpResponse:
    if not card:
        raise Http404("No model card.")
    return JsonResponse(card, json_dumps_params={"indent": 2, "sort_keys": True})


@admin.register(TrainingPolicy)
class TrainingPolicyAdmin(admin.ModelAdmin):
    """Per-project overrides; each run records the one in force in its decision."""

    list_display = ["project", "strategy_override", "compression_variants", "max_accuracy_loss_points", "updated_at"]
    list_select_related = ["project"]
    fields = ["project", "strategy_override", "note", "compression_variants", "max_accuracy_loss_points",
              "coreml_variants", "coreml_offer"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "photo_count", "manifest_sha256", "created_at"]
    readonly_fields = [field.name for field in DatasetSnapshot._meta.fields]

    def has_add_permission(self, request):
        return False


class ModelArtifactInline(admin.TabularInline):
    model = ModelArtifact
    extra = 0
    fields = ["format", "variant", "precision", "recommended", "file", "size", "sha256", "preprocessing",
              "companions", "verification"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ModelImportForm(forms.Form):
    """Firebase ML's "upload a custom model", for every format the platform serves."""

    project = forms.ModelChoiceField(queryset=Project.objects.filter(is_active=True))
    file = forms.FileField(help_text="ONNX, ExecuTorch .pte, TFLite, Core ML .mlmodel or a zipped .mlpackage.")
    labels = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line (or comma-separated), in output order; leave empty when the file carries them.",
    )
    input_size = forms.IntegerField(required=False, min_value=1, max_value=4096,
                                    help_text="Empty: the file's input shape decides.")
    resize = forms.IntegerField(required=False, min_value=1, max_value=8192,
                                help_text="Shorter side before the centre crop; empty: input size x 256/224.")
    mean = forms.CharField(required=False, help_text="R,G,B of pixels scaled to [0, 1], e.g. 0.485,0.456,0.406; "
                                                     "empty when the file says.")
    std = forms.CharField(required=False, help_text="R,G,B, e.g. 0.229,0.224,0.225.")
    release_notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def clean_labels(self):
        text = self.cleaned_data["labels"].strip()
        try:
            return labels_parse(text) if text else None
        except ValueError as exc:
            raise forms.ValidationError(f"Not a list of names: {exc}") from None

    def _triple(self, name: str):
        text = self.cleaned_data[name].strip()
        try:
            return triple_parse(text) if text else None
        except ValueError:
            raise forms.ValidationError("Three numbers (R,G,B) or one for all channels.") from None

    def clean_mean(self):
        return self._triple("mean")

    def clean_std(self):
        return self._triple("std")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: shown, never edited; new ones come from training or an import."""

    list_display = ["project", "version", "created_at", "accuracy", "provenance"]
    list_filter = ["project", "source"]
    readonly_fields = [field.name for field in ModelVersion._meta.fields] + ["card_section", "provenance"]
    fieldsets = [
        (None, {"fields": ["project", "version", "created_at", "run", "snapshot", "labels", "preprocessing",
                           "metrics"]}),
        ("Provenance", {"fields": ["provenance", "source", "imported_by", "source_filename", "source_sha256",
                                   "release_notes"]}),
        ("Model card", {"fields": ["card_section"]}),
        ("Raw model card", {"classes": ["collapse"], "fields": ["model_card"]}),
    ]
    inlines = [ModelArtifactInline]

    @admin.display(description="Model card")
    def card_section(self, version: ModelVersion) -> str:
        if not version.pk or not version.model_card:
            return "-"
        return card_html(
            version.model_card,
            chart_url=reverse("admin:training_modelversion_card_chart", args=[version.pk]),
            json_url=reverse("admin:training_modelversion_card_json", args=[version.pk]),
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="training_modelversion_import"),
            path("<int:version_id>/card.png", view(self.card_chart_view), name="training_modelversion_card_chart"),
            path("<int:version_id>/card.json", view(self.card_json_view), name="training_modelversion_card_json"),
        ] + super().get_urls()

    def card_chart_view(self, request, version_id: int) -> HttpResponse:
        """Size and latency against accuracy of every file measured for this version."""
        version = self._version_for(request, version_id)
        return _card_chart_response(version.model_card, title=f"{version} model card")

    def card_json_view(self, request, version_id: int) -> HttpResponse:
        """The version's model card as JSON."""
        return _card_json_response(self._version_for(request, version_id).model_card)

    def _version_for(self, request, version_id: int) -> ModelVersion:
        version = ModelVersion.objects.select_related("project").filter(pk=version_id).first()
        if version is None or not self.has_view_permission(request, version):
            raise Http404("No such version.")
        return version

    def import_view(self, request) -> HttpResponse:
        """The import form: verify the file, publish it, show the new version (or the refusal)."""
        if not request.user.has_perm("training.add_modelversion"):  # superusers, or granted explicitly
            raise PermissionDenied
        form = ModelImportForm(request.POST or None, request.FILES or None)
        error = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            upload = data["file"]
            try:
                version = model_version_import(
                    project=data["project"], file=upload, filename=upload.name or "",
                    request=ImportRequest(labels=data["labels"], input_size=data["input_size"],
                                          resize=data["resize"], mean=data["mean"], std=data["std"]),
                    release_notes=data["release_notes"], user=request.user,
                )
            except DomainError as exc:
                error = exc
            else:
                self.message_user(request, f"Published {version}: {version.provenance}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:training_modelversion_change", args=[version.pk]))
        context = {
            **self.admin_site.each_context(request), "title": "Import a model trained elsewhere",
            "opts": self.model._meta, "form": form,
            "error_code": error.code if error else "", "error_message": error.message if error else "",
        }
        status = error.status_code if error else 200
        return TemplateResponse(request, "admin/training/modelversion/import.html", context, status=status)

    @admin.display(description="Holdout accuracy")
    def accuracy(self, version: ModelVersion) -> str:
        interval = version.metrics.get("accuracy_interval")
        if interval:  # an imported file: with its n and 95% interval
            low, high = interval["ci95"]
            return f"{interval['value']:.3f} ({low:.3f}-{high:.3f}, n={interval['n']})"
        value, count, interval = accuracy_interval(version.metrics)
        return "-" if value is None else f"{value:.3f} {_interval_text(interval, count)}".strip()

    @admin.display(description="Provenance")
    def provenance(self, version: ModelVersion) -> str:
        return version.provenance

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
