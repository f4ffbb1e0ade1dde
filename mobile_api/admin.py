"""Distribution in the Django admin: app keys, channels, releases and their history.

Every change goes through ``mobile_api.services`` (the same moves as the staff API), so
each one is in the channel's history and reaches apps on their next poll. Moves that need
a reason (and a rollout percentage) ask for it on an intermediate page.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from common.admin import ReadOnlyAdmin
from common.errors import DomainError
from mobile_api import (
    admin_telemetry,  # noqa: F401  (release health: registered there)
    auth,
    selectors,
    services,
)
from mobile_api.models import AppKey, Channel, Release, ReleaseEvent, VersionDistribution
from mobile_api.tasks import version_distribution_request

ACTION_TEMPLATE = "admin/mobile_api/move_form.html"
HISTORY_SHOWN = 50


class MoveForm(forms.Form):
    reason = forms.CharField(
        max_length=2000, required=False, widget=forms.TextInput(attrs={"size": 80}),
        help_text="Why: kept in the channel's history with your name and the time.",
    )


class RolloutMoveForm(MoveForm):
    rollout_percent = forms.IntegerField(
        min_value=0, max_value=100, help_text="Installs whose bucket (0..99) is below this number get the release."
    )


def _intermediate(modeladmin, request, queryset, *, form, action: str, title: str) -> TemplateResponse:
    """The page asking for a reason (and a percentage) before a move is applied."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "objects": list(queryset),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action": action,
    }
    return TemplateResponse(request, ACTION_TEMPLATE, context)


def _ask_and_apply(modeladmin, request, queryset, *, action: str, title: str, apply, form_class=MoveForm):
    """Ask for the reason; then call ``apply(item, form data)`` for each selected item."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if not (form.is_bound and form.is_valid()):
        return _intermediate(modeladmin, request, queryset, form=form, action=action, title=title)
    for item in queryset:
        try:
            done = apply(item, form.cleaned_data)
        except DomainError as exc:
            modeladmin.message_user(request, f"{item}: {exc.message}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{item}: {done}", messages.SUCCESS)
    return None


# --- app keys ------------------------------------------------------------------------------

class AppKeyAddForm(forms.ModelForm):
    class Meta:
        model = AppKey
        fields = ["name", "rate_limit_per_minute"]


@admin.register(AppKey)
class AppKeyAdmin(admin.ModelAdmin):
    """Keys are generated here and shown once; revoking is an action (keys are never deleted)."""

    list_display = ["name", "prefix", "rate_limit_per_minute", "created_at", "created_by", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "created_by", "revoked_at", "revoked_by"]
    fields = ["name", "rate_limit_per_minute", "prefix", "created_at", "created_by", "revoked_at", "revoked_by"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = AppKeyAddForm
            kwargs["fields"] = AppKeyAddForm.Meta.fields
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return AppKeyAddForm.Meta.fields if obj is None else self.fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the row says who revoked it and when

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name", "rate_limit_per_minute"])
            auth.app_key_forget(obj.key_sha256)  # the cached identity carries the rate limit
            return
        created, key = services.app_key_create(
            name=form.cleaned_data["name"], rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
            actor=request.user,
        )
        obj.pk, obj.prefix, obj.key_sha256 = created.pk, created.prefix, created.key_sha256
        obj._state.adding, obj._state.db = False, created._state.db
        # The only time the key is ever shown: only its sha256 is stored.
        self.message_user(
            request,
            format_html("The new key (copy it now, it will not be shown again): <code>{}</code>", key),
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys (apps sending them get 401)")
    def revoke(self, request, queryset):
        count = 0
        for app_key in queryset.filter(revoked_at__isnull=True):
            services.app_key_revoke(app_key=app_key, actor=request.user)
            count += 1
        self.message_user(request, f"Revoked {count} keys.", messages.SUCCESS)


# --- channels ------------------------------------------------------------------------------

class ReleaseInline(admin.TabularInline):
    """The channel's releases, read-only: they change only through the moves."""

    model = Release
    fields = ["version", "state", "rollout_percent", "platforms", "formats", "min_app_version", "max_app_version",
              "created_at", "created_by"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("version", "created_by")


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["__str__", "live_releases", "auto_promote", "auto_rollout_percent", "poll_interval_seconds",
                    "wifi_only", "generation"]
    list_filter = ["project", "auto_promote"]
    list_select_related = ["project"]
    readonly_fields = ["generation", "created_at", "history"]
    inlines = [ReleaseInline]
    actions = ["promote_latest", "pause_newest", "resume_newest", "rollback_newest", "republish"]

    def get_readonly_fields(self, request, obj=None):
        # A channel's identity is fixed once it exists: its name is in every app's salt.
        return [*self.readonly_fields, "project", "name"] if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("releases__version")

    @admin.display(description="Live releases")
    def live_releases(self, channel: Channel) -> str:
        live = [r for r in channel.releases.all() if r.state in selectors.LIVE_STATES]
        return ", ".join(f"v{r.version.version} {r.rollout_percent}% {r.state}" for r in live) or "-"

    @admin.display(description="History (newest first)")
    def history(self, channel: Channel) -> str:
        events = selectors.channel_events(channel=channel, limit=HISTORY_SHOWN)
        if not events:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (f"{e.at:%Y-%m-%d %H:%M:%S}", e.get_action_display(), _v(e.from_version), _v(e.to_version),
                 "" if e.rollout_percent is None else f"{e.rollout_percent}%",
                 e.actor.get_username() if e.actor else "system", e.reason)
                for e in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>When</th><th>Move</th><th>From</th><th>To</th><th>Rollout</th><th>Who</th>"
            "<th>Why</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def save_model(self, request, obj, form, change):
        if change:
            services.channel_settings_save(channel=obj, actor=request.user)
        else:
            fields = {f: form.cleaned_data[f] for f in services.CHANNEL_SETTINGS if f in form.cleaned_data}
            created = services.channel_create(project=obj.project, name=obj.name, actor=request.user, **fields)
            obj.pk, obj.generation = created.pk, created.generation
            obj._state.adding, obj._state.db = False, created._state.db

    @admin.action(description="Promote the newest published version (asks for rollout and reason)")
    def promote_latest(self, request, queryset):
        def apply(channel: Channel, data: dict) -> str:
            version = selectors.version_latest(project_slug=channel.project.slug)
            if version is None:
                raise DomainError("No published version.")
            services.release_promote(channel=channel, version=version, rollout_percent=data["rollout_percent"],
                                     actor=request.user, reason=data["reason"])
            return f"promoted v{version.version} to {data['rollout_percent']}%."

        return _ask_and_apply(self, request, queryset, action="promote_latest", title="Promote the newest version",
                              apply=apply, form_class=RolloutMoveForm)

    @admin.action(description="Pause the newest active release")
    def pause_newest(self, request, queryset):
        return self._newest_move(request, queryset, "pause_newest", "Pause", Release.State.ACTIVE,
                                 services.release_pause)

    @admin.action(description="Resume the newest paused release")
    def resume_newest(self, request, queryset):
        return self._newest_move(request, queryset, "resume_newest", "Resume", Release.State.PAUSED,
                                 services.release_resume)

    @admin.action(description="Roll back the newest live release")
    def rollback_newest(self, request, queryset):
        return self._newest_move(request, queryset, "rollback_newest", "Roll back", None, services.release_rollback)

    @admin.action(description="Republish the static manifest and the cached document")
    def republish(self, request, queryset):
        for channel in queryset:
            services.channel_publish(channel_id=channel.pk)
        self.message_user(request, f"Republished {queryset.count()} channels.", messages.SUCCESS)

    def _newest_move(self, request, queryset, action: str, verb: str, state, service):
        def apply(channel: Channel, data: dict) -> str:
            live = selectors.channel_live_releases(channel=channel)
            release = next((r for r in live if state is None or r.state == state), None)
            if release is None:
                raise DomainError(f"No release to {verb.lower()}.")
            service(release=release, actor=request.user, reason=data["reason"])
            return f"{verb.lower()}: v{release.version.version}."

        return _ask_and_apply(self, request, queryset, action=action, title=f"{verb} (newest release)", apply=apply)


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


# --- releases and their history ----------------------------------------------------------------

@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    """Releases are created by promoting (channel action, staff API, nightly publish); read-only here."""

    list_display = ["__str__", "channel", "version_number", "state", "rollout_percent", "created_at", "created_by"]
    list_filter = ["state", "channel__project", "channel__name"]
    list_select_related = ["channel__project", "version", "created_by"]
    actions = ["pause", "resume", "rollback", "change_rollout"]

    @admin.display(description="Version", ordering="version__version")
    def version_number(self, release: Release) -> str:
        return f"v{release.version.version}"

    def _move(self, request, queryset, *, action: str, title: str, service, form_class=MoveForm):
        def apply(release: Release, data: dict) -> str:
            extra = {"rollout_percent": data["rollout_percent"]} if "rollout_percent" in data else {}
            moved = service(release=release, actor=request.user, reason=data["reason"], **extra)
            return f"now {moved.state}, {moved.rollout_percent}%."

        return _ask_and_apply(self, request, queryset, action=action, title=title, apply=apply,
                              form_class=form_class)

    @admin.action(description="Pause selected releases")
    def pause(self, request, queryset):
        return self._move(request, queryset, action="pause", title="Pause", service=services.release_pause)

    @admin.action(description="Resume selected releases")
    def resume(self, request, queryset):
        return self._move(request, queryset, action="resume", title="Resume", service=services.release_resume)

    @admin.action(description="Roll back selected releases")
    def rollback(self, request, queryset):
        return self._move(request, queryset, action="rollback", title="Roll back", service=services.release_rollback)

    @admin.action(description="Change the rollout of selected releases")
    def change_rollout(self, request, queryset):
        return self._move(request, queryset, action="change_rollout", title="Change rollout",
                          service=services.release_rollout, form_class=RolloutMoveForm)


@admin.register(ReleaseEvent)
class ReleaseEventAdmin(ReadOnlyAdmin):
    """The append-only history: viewable, never added, changed or deleted by hand."""

    list_display = ["at", "channel", "action", "from_version", "to_version", "rollout_percent", "actor", "reason"]
    list_filter = ["action", "channel__project", "channel__name"]
    list_select_related = ["channel__project", "actor"]
    date_hierarchy = "at"



# --- distribution of published versions (patches, auto-promote channels) ----------------------

@admin.register(VersionDistribution)
class VersionDistributionAdmin(ReadOnlyAdmin):
    """What happened after each publish: patches built, channels released on, or the error."""

    list_display = ["version", "status", "attempts", "patches", "channel_list", "error", "updated_at"]
    list_filter = ["status", "version__project"]
    list_select_related = ["version__project"]
    actions = ["distribute_again"]

    @admin.display(description="Channels")
    def channel_list(self, distribution: VersionDistribution) -> str:
        return ", ".join(distribution.channels) or "-"

    @admin.action(description="Distribute the selected versions again")
    def distribute_again(self, request, queryset):
        # Idempotent: channels holding a release of the version (even one rolled back) keep theirs.
        for distribution in queryset.select_related("version__project"):
            version_distribution_request(version=distribution.version)
        self.message_user(request, f"Queued the distribution of {queryset.count()} version(s) again.",
                          messages.SUCCESS)
