"""Staff see every automatic decision with its votes, reverse them, and see suspicious pairs."""
from __future__ import annotations

from django.contrib import admin, messages

from challenges.models import Project
from common.errors import DomainError
from verification.models import VerificationDecision, VerificationTask
from verification.selectors import pair_list_suspicious
from verification.services import decision_reverse


@admin.register(VerificationDecision)
class VerificationDecisionAdmin(admin.ModelAdmin):
    list_display = ("id", "photo", "outcome", "yes_weight", "no_weight", "suggested_label", "created_at", "reversed_at")
    list_filter = ("outcome", ("reversed_at", admin.EmptyFieldListFilter))
    readonly_fields = [field.name for field in VerificationDecision._meta.fields]
    actions = ["reverse"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the record of an automatic decision stays

    def changelist_view(self, request, extra_context=None):
        """The suspicious pairs of every project, above the decisions."""
        pairs = [(project.slug, pair) for project in Project.objects.all()
                 for pair in pair_list_suspicious(project_id=project.pk)]
        if pairs:
            self.message_user(request, "; ".join(
                f"suspicious pair in {slug}: volunteers {p.volunteer_a} and {p.volunteer_b} verified each other "
                f"{p.observed} times (expected {p.expected:.1f})"
                for slug, p in pairs
            ), messages.WARNING)
        return super().changelist_view(request, extra_context)

    @admin.action(description="Reverse: back to pending, points taken back")
    def reverse(self, request, queryset):
        done = 0
        for decision in queryset.select_related("photo"):
            try:
                decision_reverse(decision=decision, moderator=request.user, reason="reversed in the admin")
                done += 1
            except DomainError as exc:
                self.message_user(request, f"decision {decision.pk}: {exc.message}", messages.ERROR)
        self.message_user(request, f"Reversed {done} decision(s).")


@admin.register(VerificationTask)
class VerificationTaskAdmin(admin.ModelAdmin):
    list_display = ("id", "volunteer", "photo", "label_asked", "is_gold", "answer", "correct", "weight", "points")
    list_filter = ("is_gold", "answer", "project")
    readonly_fields = [field.name for field in VerificationTask._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
