from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from submissions.models import Photo
from submissions.services import photo_moderate


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "label", "project", "status", "volunteer", "source", "created_at"]
    list_filter = ["status", "project", "label", "challenge", "source"]
    list_select_related = ["label", "project", "volunteer"]
    search_fields = ["volunteer__username", "public_id"]
    readonly_fields = [
        "preview", "public_id", "image", "width", "height", "source_format", "upload_sha256", "sha256", "phash",
        "moderated_by", "moderated_at", "volunteer", "source",
    ]
    actions = ["approve", "reject_off_topic"]

    @admin.display(description="Photo")
    def thumbnail(self, photo: Photo) -> str:
        url = reverse("photo-image", args=[photo.public_id])
        return format_html('<img src="{}" alt="" style="height:64px;width:64px;object-fit:cover">', url)

    @admin.display(description="Preview")
    def preview(self, photo: Photo) -> str:
        url = reverse("photo-image", args=[photo.public_id])
        return format_html('<img src="{}" alt="" style="max-height:320px">', url)

    @admin.action(description="Approve selected photos")
    def approve(self, request, queryset):
        for photo in queryset:
            photo_moderate(photo=photo, moderator=request.user, approve=True)
        self.message_user(request, f"Approved {queryset.count()} photos.", messages.SUCCESS)

    @admin.action(description="Reject selected photos (off topic)")
    def reject_off_topic(self, request, queryset):
        for photo in queryset:
            photo_moderate(photo=photo, moderator=request.user, approve=False, reason="Off topic for the label.")
        self.message_user(request, f"Rejected {queryset.count()} photos.", messages.SUCCESS)
