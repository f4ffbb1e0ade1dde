from django.contrib import admin

from challenges.models import Challenge, Label, Project


class LabelInline(admin.TabularInline):
    model = Label
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "time_zone", "is_active"]
    inlines = [LabelInline]


@admin.register(Challenge)
class ChallengeAdmin(admin.ModelAdmin):
    list_display = ["day", "project", "title", "points_multiplier", "generated_reason"]
    list_filter = ["project"]
    date_hierarchy = "day"
    filter_horizontal = ["labels"]
