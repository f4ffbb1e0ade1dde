"""Admin: read-only ledger, totals and audit log; curation through actions that demand a reason."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse

from challenges.models import Project
from common.admin import ReadOnlyAdmin
from leaderboards.models import CurationAction, LeaderboardFlag, PointsEntry, ScoreTotal
from leaderboards.services import leaderboard_flag_set, points_adjust


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=300, required=True, widget=forms.TextInput(attrs={"size": 80}))


def _curation_action(action: str, description: str):
    """An admin action applying `action` to the (project, volunteer) pairs of the selected rows.

    The first submit shows a form asking why; the audit log gets who, when and that reason.
    """

    def run(modeladmin, request, queryset):
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            pairs = set(queryset.values_list("project_id", "volunteer_id"))
            projects = Project.objects.in_bulk({p for p, _ in pairs})
            users = get_user_model().objects.in_bulk({v for _, v in pairs})
            for project_id, volunteer_id in sorted(pairs):
                leaderboard_flag_set(
                    project=projects[project_id], volunteer=users[volunteer_id], action=action,
                    reason=form.cleaned_data["reason"], actor=request.user,
                )
            modeladmin.message_user(request, f"{description}: {len(pairs)} volunteer(s).", messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "leaderboards/admin_reason.html",
            {
                **modeladmin.admin_site.each_context(request),
                "title": f"{description}: why?",
                "form": form,
                "queryset": queryset,
                "action": request.POST.get("action"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": modeladmin.model._meta,
            },
        )

    run.__name__ = f"curate_{action}"
    return admin.action(description=description)(run)


CURATION_ACTIONS = [
    _curation_action(CurationAction.Action.PIN, "Pin on the project's boards"),
    _curation_action(CurationAction.Action.UNPIN, "Unpin"),
    _curation_action(CurationAction.Action.HIDE, "Hide from the project's boards"),
    _curation_action(CurationAction.Action.UNHIDE, "Unhide"),
    _curation_action(CurationAction.Action.DISQUALIFY, "Disqualify (hidden, no new points)"),
    _curation_action(CurationAction.Action.REQUALIFY, "Requalify"),
]


@admin.register(ScoreTotal)
class ScoreTotalAdmin(ReadOnlyAdmin):
    list_display = ["project", "display_name", "period", "period_start", "points", "photos", "streak_current",
                    "streak_best"]
    list_filter = ["project", "period", "period_start"]
    list_select_related = ["project", "volunteer__profile"]
    search_fields = ["volunteer__username", "volunteer__profile__display_name"]
    actions = CURATION_ACTIONS

    @admin.display(description="Volunteer")
    def display_name(self, total: ScoreTotal) -> str:
        profile = getattr(total.volunteer, "profile", None)
        return f"{profile.display_name if profile else '-'} ({total.volunteer.username})"


@admin.register(LeaderboardFlag)
class LeaderboardFlagAdmin(ReadOnlyAdmin):
    """State only; change it with the actions (they write the audit log)."""

    list_display = ["project", "volunteer", "pinned", "hidden", "disqualified", "updated_at"]
    list_filter = ["project", "pinned", "hidden", "disqualified"]
    list_select_related = ["project", "volunteer"]
    search_fields = ["volunteer__username", "volunteer__profile__display_name"]
    actions = CURATION_ACTIONS


@admin.register(CurationAction)
class CurationActionAdmin(ReadOnlyAdmin):
    """The audit log: append-only."""

    list_display = ["created_at", "project", "volunteer", "action", "points", "reason", "created_by"]
    list_filter = ["project", "action"]
    list_select_related = ["project", "volunteer", "created_by"]
    search_fields = ["volunteer__username", "reason"]
    date_hierarchy = "created_at"


class AdjustmentForm(forms.ModelForm):
    reason = forms.CharField(max_length=300, required=True, help_text="Logged in the audit trail.")

    class Meta:
        model = PointsEntry
        fields = ["project", "volunteer", "points", "reason"]

    def clean_points(self):
        if not self.cleaned_data["points"]:
            raise forms.ValidationError("An adjustment of 0 points changes nothing.")
        return self.cleaned_data["points"]


@admin.register(PointsEntry)
class PointsEntryAdmin(ReadOnlyAdmin):
    """The ledger. 'Add' records an adjustment through the service (totals and audit log follow)."""

    list_display = ["created_at", "project", "volunteer", "kind", "points", "day", "reason", "created_by"]
    list_filter = ["project", "kind"]
    list_select_related = ["project", "volunteer", "created_by"]
    search_fields = ["volunteer__username", "reason"]
    raw_id_fields = ["photo"]

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("leaderboards.add_pointsentry")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = AdjustmentForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["project", "volunteer", "points", "reason"] if obj is None else super().get_fields(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        entry = points_adjust(
            project=form.cleaned_data["project"], volunteer=form.cleaned_data["volunteer"],
            points=form.cleaned_data["points"], reason=form.cleaned_data["reason"], actor=request.user,
        )
        obj.pk, obj.kind, obj.day = entry.pk, entry.kind, entry.day
