from django.contrib import admin

from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "night", "trigger", "status", "stage", "progress_percent", "started_at", "finished_at"]
    list_filter = ["project", "status", "trigger"]
    readonly_fields = [field.name for field in TrainingRun._meta.fields]

    @admin.display(description="Progress")
    def progress_percent(self, run: TrainingRun) -> str:
        return f"{run.progress:.0%}"

    def has_add_permission(self, request):
        return False


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
