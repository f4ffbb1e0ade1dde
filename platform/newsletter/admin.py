from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from common.errors import DomainError
from newsletter.models import NewsletterDelivery, NewsletterIssue
from newsletter.services import newsletter_issue_render, newsletter_issue_send_test
from newsletter.tasks import newsletter_issue_send_task


@admin.register(NewsletterIssue)
class NewsletterIssueAdmin(admin.ModelAdmin):
    """Preview, send a test to yourself, then send to subscribers (once per person, whatever happens)."""

    list_display = ["week_start", "subject", "status", "sent_count", "sent_at", "preview_link"]
    list_filter = ["status"]
    readonly_fields = ["status", "created_at", "sent_at", "sent_count", "preview_link"]
    actions = ["send_test_to_me", "send_to_subscribers"]

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("<int:issue_id>/preview/", preview, name="newsletter_newsletterissue_preview")] + super().get_urls()

    @admin.display(description="Preview")
    def preview_link(self, issue: NewsletterIssue) -> str:
        if issue.pk is None:
            return "-"
        url = reverse("admin:newsletter_newsletterissue_preview", args=[issue.pk])
        return format_html('<a href="{}" target="_blank" rel="noopener">preview</a>', url)

    def preview_view(self, request: HttpRequest, issue_id: int) -> HttpResponse:
        """The issue's HTML as subscribers see it (with the viewing admin's unsubscribe link)."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        issue = get_object_or_404(NewsletterIssue, pk=issue_id)
        return HttpResponse(newsletter_issue_render(issue=issue, user=request.user).html)

    @admin.action(description="Send a test to me")
    def send_test_to_me(self, request: HttpRequest, queryset) -> None:
        for issue in queryset:
            try:
                newsletter_issue_send_test(issue=issue, user=request.user)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
        self.message_user(request, f"Sent {queryset.count()} test email(s) to {request.user.email}.")

    @admin.action(description="Send to subscribers", permissions=["change"])
    def send_to_subscribers(self, request: HttpRequest, queryset) -> None:
        # A worker sends (a long list must not hold the request); claims make a double click harmless.
        for issue in queryset:
            transaction.on_commit(lambda issue_id=issue.pk: newsletter_issue_send_task.delay(issue_id))
            self.message_user(request, f"{issue.week_start}: sending to subscribers; each gets it once.")


@admin.register(NewsletterDelivery)
class NewsletterDeliveryAdmin(admin.ModelAdmin):
    list_display = ["issue", "user", "claimed_at", "sent_at"]
    list_filter = ["issue"]
    readonly_fields = ["issue", "user", "claimed_at", "sent_at"]

    def has_add_permission(self, request):
        return False
