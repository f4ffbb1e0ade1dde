"""Admin: projects with their labels, and daily challenges scheduled on a month calendar."""
from __future__ import annotations

import calendar
import datetime as dt
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db.models import Count, Q
from django.http import FileResponse, HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from challenges.models import Challenge, Label, Project
from challenges.selectors import challenge_calendar_month
from common.errors import DomainError
from common.images import image_sanitize
from training.portability import dataset_export_file


class LabelForm(forms.ModelForm):
    """An example photo is public: it goes through the upload pipeline (decoded, metadata-free)."""

    class Meta:
        model = Label
        fields = "__all__"

    def clean_example_photo(self):
        photo = self.cleaned_data.get("example_photo")
        if not isinstance(photo, UploadedFile):  # unchanged or cleared
            return photo
        try:
            sanitized = image_sanitize(
                upload=photo, size=photo.size,
                max_bytes=settings.PLATFORM_UPLOAD_MAX_BYTES, max_pixels=settings.PLATFORM_UPLOAD_MAX_PIXELS,
            )
        except DomainError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc
        return SimpleUploadedFile(f"{Path(photo.name).stem}.jpg", sanitized.display, content_type="image/jpeg")


class LabelInline(admin.TabularInline):
    """Labels with their progress towards both milestones (prototype 30, target 200 by default)."""

    model = Label
    form = LabelForm
    extra = 0
    fields = ["name", "description", "target_count", "example_photo", "progress"]
    readonly_fields = ["progress"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            approved_count=Count("photos", filter=Q(photos__status="approved"))
        )

    @admin.display(description="Approved photos")
    def progress(self, label: Label) -> str:
        approved = getattr(label, "approved_count", None)
        if approved is None:  # the empty "add another" row
            return "-"
        return f"{approved} (prototype {Label.PROTOTYPE_TARGET}, target {label.target_count})"


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "time_zone", "is_active"]
    inlines = [LabelInline]
    actions = ["export_dataset"]

    @admin.action(description="Export approved data set (.zip)", permissions=["view"])
    def export_dataset(self, request: HttpRequest, queryset):
        """Download one project's approved photos and manifest (no volunteer names), as dataset_export writes it."""
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one project to export.", level=messages.ERROR)
            return None
        project = queryset.get()
        return FileResponse(
            dataset_export_file(project=project), as_attachment=True, filename=f"{project.slug}-dataset.zip"
        )


class ChallengeAdminForm(forms.ModelForm):
    """Scheduling rules the model cannot express: labels of the same project, a real window."""

    class Meta:
        model = Challenge
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        project = cleaned.get("project")
        labels = cleaned.get("labels")
        if project is not None and labels is not None:
            foreign = [label.name for label in labels if label.project_id != project.pk]
            if foreign:
                self.add_error("labels", f"Not labels of {project.slug}: {', '.join(sorted(foreign))}.")
        if labels is not None and not labels:
            self.add_error("labels", "Choose at least one label.")
        starts_at, ends_at = cleaned.get("starts_at"), cleaned.get("ends_at")
        if starts_at is not None and ends_at is not None and ends_at <= starts_at:
            self.add_error("ends_at", "The challenge must end after it starts (same day, local time).")
        return cleaned


@admin.register(Challenge)
class ChallengeAdmin(admin.ModelAdmin):
    """Challenges by day; the calendar view shows a month at a glance."""

    form = ChallengeAdminForm
    list_display = ["day", "project", "title", "label_names", "window", "points_multiplier", "generated_reason"]
    list_filter = ["project"]
    list_select_related = ["project"]
    date_hierarchy = "day"
    ordering = ["-day", "project"]
    filter_horizontal = ["labels"]
    change_list_template = "admin/challenges/challenge/change_list.html"
    fieldsets = [
        (None, {"fields": ["project", "day", "title", "instructions", "labels", "points_multiplier"]}),
        (
            "Opening hours (local time in the project's time zone)",
            {"fields": ["starts_at", "ends_at"], "description": "Empty: from midnight / until the end of the day."},
        ),
        ("Generated", {"fields": ["generated_reason"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("labels")

    @admin.display(description="Labels")
    def label_names(self, challenge: Challenge) -> str:
        return ", ".join(label.name for label in challenge.labels.all())

    @admin.display(description="Open (local)")
    def window(self, challenge: Challenge) -> str:
        starts = challenge.starts_at.strftime("%H:%M") if challenge.starts_at else "00:00"
        ends = challenge.ends_at.strftime("%H:%M") if challenge.ends_at else "24:00"
        return f"{starts}-{ends} {challenge.project.time_zone}"

    def get_urls(self):
        urls = [
            path(
                "calendar/",
                self.admin_site.admin_view(self.calendar_view),
                name="challenges_challenge_calendar",
            )
        ]
        return urls + super().get_urls()

    def calendar_view(self, request: HttpRequest) -> TemplateResponse:
        """A month grid listing each day's challenges, with links to edit or schedule."""
        today = timezone.localdate()
        try:
            year = int(request.GET.get("year", today.year))
            month = int(request.GET.get("month", today.month))
            first = dt.date(year, month, 1)
        except ValueError:
            first = today.replace(day=1)
        project_id = request.GET.get("project") or None
        by_day = challenge_calendar_month(year=first.year, month=first.month, project_id=project_id)
        add_url = reverse("admin:challenges_challenge_add")
        project_query = f"&project={project_id}" if project_id else ""
        weeks = []
        for week in calendar.Calendar(firstweekday=0).monthdatescalendar(first.year, first.month):
            weeks.append(
                [
                    {
                        "date": day,
                        "in_month": day.month == first.month,
                        "is_today": day == today,
                        "challenges": by_day.get(day, []),
                        "add_url": f"{add_url}?day={day.isoformat()}{project_query}",
                    }
                    for day in week
                ]
            )
        previous_month = (first - dt.timedelta(days=1)).replace(day=1)
        next_month = (first + dt.timedelta(days=32)).replace(day=1)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Challenges: {first:%B %Y}",
            "weeks": weeks,
            "weekdays": [calendar.day_abbr[i] for i in range(7)],
            "month": first,
            "previous_month": previous_month,
            "next_month": next_month,
            "projects": Project.objects.all(),
            "project_id": str(project_id or ""),
        }
        return TemplateResponse(request, "admin/challenges/challenge/calendar.html", context)
