"""Moderation in the Django admin: a queue with thumbnails, flags, and bulk decisions.

Actions stay thin: they parse the intermediate forms and call the services in
``submissions.moderation`` (and ``submissions.services.photo_moderate`` through them).
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from challenges.models import Label
from common.errors import DomainError
from submissions.models import Photo
from submissions.moderation import photo_approve_many, photo_feature, photo_reject_many, photo_relabel


class FlagFilter(admin.SimpleListFilter):
    """What needs a second look: near duplicates, model disagreement, bursts; and featured photos."""

    title = "flags"
    parameter_name = "flag"

    def lookups(self, request, model_admin):
        return [
            ("near_duplicate", "Near duplicate"),
            ("model_disagreement", "Model disagreement"),
            ("suspicious_volume", "Suspicious volume"),
            ("featured", "Featured"),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "near_duplicate":
                return queryset.filter(near_duplicate_of__isnull=False)
            case "model_disagreement":
                return queryset.filter(flag_model_disagreement=True)
            case "suspicious_volume":
                return queryset.filter(flag_suspicious_volume=True)
            case "featured":
                return queryset.filter(featured=True)
        return queryset


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=300, widget=forms.TextInput(attrs={"size": 80}),
        help_text="The volunteers see this reason; it applies to every selected photo.",
    )


class RelabelForm(forms.Form):
    label = forms.ModelChoiceField(queryset=Label.objects.none())

    def __init__(self, *args, project_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        # Only labels of the photos' own project can be chosen.
        self.fields["label"].queryset = Label.objects.filter(project_id=project_id)


def _image_url(photo: Photo) -> str:
    """The small stored thumbnail; old photos have none, so fall back to the full image view.

    Both go through the access-checked views (storage URLs of private photos would be
    either broken on local storage or public on S3).
    """
    if photo.thumbnail:
        try:
            return reverse("photo-thumbnail", args=[photo.public_id])
        except NoReverseMatch:  # a deployment without the thumbnail route
            pass
    return reverse("photo-image", args=[photo.public_id])


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = [
        "thumbnail_tag", "label", "project", "status", "flags", "model_confidence_pct", "contributor", "challenge",
        "created_at",
    ]
    list_filter = ["status", FlagFilter, "project", "label", "challenge", "source"]
    list_select_related = ["label", "project", "volunteer", "challenge"]
    search_fields = ["volunteer__username", "public_id", "app_name"]
    readonly_fields = [
        "preview", "public_id", "image", "display_image", "thumbnail", "width", "height", "source_format",
        "upload_sha256", "sha256", "phash", "moderated_by", "moderated_at", "volunteer", "source",
        "app_name", "app_key_id", "predicted_label", "model_version",
        "near_duplicate_of", "model_confidence", "flag_model_disagreement", "flag_suspicious_volume",
        "featured", "featured_at",
    ]
    raw_id_fields = ["challenge"]
    # A queue drains oldest first (as the moderation API lists it).
    ordering = ["created_at", "id"]
    actions = ["approve", "reject_with_reason", "relabel", "feature", "unfeature"]

    @admin.display(description="Photo")
    def thumbnail_tag(self, photo: Photo) -> str:
        return format_html(
            '<img src="{}" alt="" loading="lazy" style="height:64px;width:64px;object-fit:cover">', _image_url(photo)
        )

    @admin.display(description="Preview")
    def preview(self, photo: Photo) -> str:
        url = reverse("photo-image", args=[photo.public_id])
        return format_html('<img src="{}" alt="" style="max-height:320px">', url)

    @admin.display(description="Flags")
    def flags(self, photo: Photo) -> str:
        names = [
            name
            for name, on in [
                ("near duplicate", photo.near_duplicate_of_id is not None),
                ("model disagrees", photo.flag_model_disagreement),
                ("suspicious volume", photo.flag_suspicious_volume),
                ("featured", photo.featured),
            ]
            if on
        ]
        return ", ".join(names) or "-"

    @admin.display(description="From", ordering="volunteer__username")
    def contributor(self, photo: Photo) -> str:
        """The volunteer, or for app feedback the app and what its model had predicted."""
        if photo.source == Photo.Source.APP:
            version = f" v{photo.model_version}" if photo.model_version else ""
            return f"App feedback: {photo.app_name} (model{version} said {photo.predicted_label or '?'})"
        return str(photo.volunteer) if photo.volunteer_id else photo.get_source_display()

    @admin.display(description="Model", ordering="model_confidence")
    def model_confidence_pct(self, photo: Photo) -> str:
        return "-" if photo.model_confidence is None else f"{photo.model_confidence:.0%}"

    # --- actions ---------------------------------------------------------------------

    @admin.action(description="Approve selected photos")
    def approve(self, request, queryset):
        count = photo_approve_many(photos=queryset.select_related("label", "project"), moderator=request.user)
        self.message_user(request, f"Approved {count} photos.", messages.SUCCESS)

    @admin.action(description="Reject selected photos (asks for a reason)")
    def reject_with_reason(self, request, queryset):
        form = RejectForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            try:
                count = photo_reject_many(
                    photos=queryset.select_related("label", "project"),
                    moderator=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"Rejected {count} photos.", messages.SUCCESS)
            return None
        return self._intermediate(request, queryset, form=form, action="reject_with_reason", title="Reject photos")

    @admin.action(description="Relabel selected photos (asks for the label)")
    def relabel(self, request, queryset):
        project_ids = set(queryset.values_list("project_id", flat=True))
        if len(project_ids) != 1:
            self.message_user(request, "Relabel photos of one project at a time.", messages.ERROR)
            return None
        project_id = project_ids.pop()
        form = RelabelForm(request.POST if "apply" in request.POST else None, project_id=project_id)
        if form.is_bound and form.is_valid():
            label = form.cleaned_data["label"]
            count = 0
            for photo in queryset.select_related("label", "project"):
                photo_relabel(photo=photo, label=label, moderator=request.user)
                count += 1
            self.message_user(request, f"Relabelled {count} photos as {label.name}.", messages.SUCCESS)
            return None
        return self._intermediate(request, queryset, form=form, action="relabel", title="Relabel photos")

    @admin.action(description="Feature selected photos (approved only)")
    def feature(self, request, queryset):
        self._set_featured(request, queryset, featured=True)

    @admin.action(description="Unfeature selected photos")
    def unfeature(self, request, queryset):
        self._set_featured(request, queryset, featured=False)

    def _set_featured(self, request, queryset, *, featured: bool) -> None:
        done, refused = 0, 0
        for photo in queryset:
            try:
                photo_feature(photo=photo, featured=featured, moderator=request.user)
            except DomainError:
                refused += 1
            else:
                done += 1
        verb = "Featured" if featured else "Unfeatured"
        self.message_user(request, f"{verb} {done} photos.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{refused} photos are not approved and were not featured.", messages.WARNING)

    def _intermediate(self, request, queryset, *, form: forms.Form, action: str, title: str) -> TemplateResponse:
        """The page between choosing an action and applying it: one form for all selected photos."""
        photos = list(queryset.select_related("label", "project")[:200])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "form": form,
            "action": action,
            "photos": [(photo, _image_url(photo)) for photo in photos],
            "selected": queryset.values_list("pk", flat=True),
            "count": queryset.count(),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/submissions/photo/action_form.html", context)
