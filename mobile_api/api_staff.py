"""Staff endpoints that move releases and answer questions about the history (PROTOCOL.md).

``/api/mobile/v1/staff/models/<model>/channels/<channel>/...``: staff users only (session
or token). Each move calls one service and answers the release as it is afterwards.
"""
from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from challenges.selectors import project_get
from common.errors import NotFound, ValidationFailed
from common.fields import StrictInput
from mobile_api import rollout, selectors, services, update
from mobile_api.fields import app_version_field
from mobile_api.models import Channel, Release, ReleaseEvent
from training.imports import ImportRequest, labels_parse, model_version_import, triple_parse

HISTORY_MAX = 200


def _channel(*, model: str, name: str, create_default: bool = False) -> Channel:
    """The channel named in the URL; a default one (stable, beta) is created on first promote."""
    channel = selectors.channel_get(project_slug=model, name=name)
    if channel is not None:
        return channel
    version = selectors.version_latest(project_slug=model)
    if version is None or not version.project.is_active:
        raise NotFound(f"No model named {model!r}.", code="model_not_found")
    if create_default and name in services.DEFAULT_CHANNELS:
        services.channel_defaults_ensure(project=version.project)
        return selectors.channel_get(project_slug=model, name=name)
    raise NotFound(f"The model {model!r} has no channel {name!r}.", code="channel_not_found")


def _release(*, channel: Channel, version: int) -> Release:
    release = selectors.release_get_live(channel=channel, version=version)
    if release is None:
        raise NotFound(f"Version {version} is not live on {channel}.", code="release_not_found")
    return release


def release_output(release: Release) -> dict:
    """A release as the staff API shows it."""
    return {
        "release_id": release.id,
        "model": release.channel.project.slug,
        "channel": release.channel.name,
        "version": release.version.version,
        "state": release.state,
        "rollout_percent": release.rollout_percent,
        "platforms": release.platforms,
        "formats": release.formats,
        "min_app_version": release.min_app_version,
        "max_app_version": release.max_app_version,
        "created_at": release.created_at.isoformat(),
        "generation": release.channel.generation,
    }


def event_output(event: ReleaseEvent) -> dict:
    """One history entry: who, when, why, from which version to which, and the state after."""
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "action": event.action,
        "release_id": event.release_id,
        "from_version": event.from_version,
        "to_version": event.to_version,
        "rollout_percent": event.rollout_percent,
        "actor": event.actor.get_username() if event.actor else None,
        "reason": event.reason,
        "generation": event.generation,
        "state": event.state,
    }


class MoveInput(StrictInput):
    version = serializers.IntegerField(min_value=1, max_value=10**9)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class RolloutInput(MoveInput):
    rollout_percent = serializers.IntegerField(min_value=0, max_value=100)


class PromoteInput(RolloutInput):
    rollout_percent = serializers.IntegerField(min_value=0, max_value=100, default=100)
    platforms = serializers.ListField(child=serializers.ChoiceField(update.PLATFORMS), default=list, max_length=3)
    formats = serializers.ListField(child=serializers.ChoiceField(update.FORMATS), default=list, max_length=len(update.FORMATS))
    min_app_version = app_version_field(required=False, allow_blank=True,
                                             default="")
    max_app_version = app_version_field(required=False, allow_blank=True,
                                             default="")


class _StaffApi(APIView):
    permission_classes = [IsAdminUser]


_CONFLICT = OpenApiResponse(description="release_exists, release_state_conflict: the move does not fit the "
                                        "release's state")


def _int_query(name: str, low: int, high: int, description: str, *, required: bool = False) -> OpenApiParameter:
    # `?name=` (empty) reads as not given; an empty value is documented as allowed.
    return OpenApiParameter(name, {"type": "integer", "minimum": low, "maximum": high}, required=required,
                            description=description, allow_blank=not required)


class ChannelPromoteApi(_StaffApi):
    """Release a version on the channel (staged: ``rollout_percent``; targeted: platforms, ...)."""

    @extend_schema(request=PromoteInput, responses={201: OpenApiTypes.OBJECT, 409: _CONFLICT})
    def post(self, request: Request, name: str, channel: str) -> Response:
        data = _valid(PromoteInput, request)
        found = _channel(model=name, name=channel, create_default=True)
        version = selectors.version_get(project_slug=name, version=data["version"])
        if version is None:
            raise NotFound(f"No version {data['version']} of {name!r}.", code="model_version_not_found")
        release = services.release_promote(
            channel=found, version=version, rollout_percent=data["rollout_percent"], platforms=data["platforms"],
            formats=data["formats"], min_app_version=data["min_app_version"],
            max_app_version=data["max_app_version"], actor=request.user, reason=data["reason"],
        )
        return Response(release_output(_reloaded(release)), status=status.HTTP_201_CREATED)


class ChannelRolloutApi(_StaffApi):
    """Change the share of installs (buckets) a live release covers."""

    @extend_schema(request=RolloutInput, responses={200: OpenApiTypes.OBJECT, 409: _CONFLICT})
    def post(self, request: Request, name: str, channel: str) -> Response:
        data = _valid(RolloutInput, request)
        release = _release(channel=_channel(model=name, name=channel), version=data["version"])
        release = services.release_rollout(release=release, rollout_percent=data["rollout_percent"],
                                           actor=request.user, reason=data["reason"])
        return Response(release_output(_reloaded(release)))


def _simple_move(service):
    class Api(_StaffApi):
        @extend_schema(request=MoveInput, responses={200: OpenApiTypes.OBJECT, 409: _CONFLICT})
        def post(self, request: Request, name: str, channel: str) -> Response:
            data = _valid(MoveInput, request)
            release = _release(channel=_channel(model=name, name=channel), version=data["version"])
            release = service(release=release, actor=request.user, reason=data["reason"])
            return Response(release_output(_reloaded(release)))

    return Api


class ChannelPauseApi(_simple_move(services.release_pause)):
    """Stop a release spreading; installs already on it keep it."""


class ChannelResumeApi(_simple_move(services.release_resume)):
    """Let a paused release spread again."""


class ChannelRollbackApi(_simple_move(services.release_rollback)):
    """Withdraw a release; its installs go back to the previous one."""


class ChannelHistoryApi(_StaffApi):
    """The channel's moves, newest first: ``?limit=`` (at most 200) and ``?before=<event id>`` to page."""

    @extend_schema(
        parameters=[_int_query("limit", 1, HISTORY_MAX, "At most this many moves (default 50)."),
                    _int_query("before", 1, 2**62, "Moves older than this event id (the last answer's next_before).")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, name: str, channel: str) -> Response:
        found = _channel(model=name, name=channel)
        limit = _int_param(request, "limit", default=50, low=1, high=HISTORY_MAX)
        before = _int_param(request, "before", default=None, low=1, high=2**62)
        events = selectors.channel_events(channel=found, limit=limit, before_id=before)
        return Response({
            "model": name, "channel": channel, "generation": found.generation,
            "events": [event_output(e) for e in events],
            "next_before": events[-1].id if len(events) == limit else None,
        })


class ChannelResolveApi(_StaffApi):
    """Which version a bucket got at a time: the rule replayed on the last move at or before it.

    ``?bucket=17&at=<ISO time>`` (default now), optionally ``platform``, ``formats``,
    ``app_version`` and ``current_version`` (an install already on a paused release keeps it);
    what is not given is not checked.
    """

    @extend_schema(
        parameters=[
            _int_query("bucket", 0, rollout.BUCKETS - 1, "The bucket (PROTOCOL.md, Bucketing).", required=True),
            OpenApiParameter("at", OpenApiTypes.DATETIME, description="ISO 8601 time; default now."),
            OpenApiParameter("platform", str, enum=list(update.PLATFORMS)),
            OpenApiParameter("formats", {"type": "string", "pattern": rf"^({'|'.join(update.FORMATS)})?(,({'|'.join(update.FORMATS)})?)*$"},
                             description="Comma-separated formats the install accepts."),
            OpenApiParameter("app_version", {"type": "string", "pattern": r"^([0-9]{1,6}(\.[0-9]{1,6}){0,3})?$"}),
            _int_query("current_version", 1, 10**9, "The version the install runs."),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, name: str, channel: str) -> Response:
        found = _channel(model=name, name=channel)
        bucket = _int_param(request, "bucket", default=None, low=0, high=rollout.BUCKETS - 1, required=True)
        at = _time_param(request, "at")
        platform = request.query_params.get("platform", "")
        if platform and platform not in update.PLATFORMS:
            _invalid("platform", f"one of {', '.join(update.PLATFORMS)}")
        formats = tuple(f for f in request.query_params.get("formats", "").split(",") if f)
        if any(f not in update.FORMATS for f in formats):
            _invalid("formats", f"a comma-separated list of {', '.join(update.FORMATS)}")
        app_version = request.query_params.get("app_version", "")
        if app_version and not rollout.APP_VERSION.match(app_version):
            _invalid("app_version", "a dotted version of 1 to 4 numbers")
        current = _int_param(request, "current_version", default=None, low=1, high=10**9)
        event = selectors.channel_event_at(channel=found, at=at)
        release = None
        if event is not None:
            install = rollout.Install("", app_version, platform, formats, current)
            release = rollout.resolve_bucket(event.state, bucket=bucket, install=install)
        return Response({
            "model": name, "channel": channel, "bucket": bucket, "at": at.isoformat(),
            "event_id": event.id if event else None, "generation": event.generation if event else None,
            "version": release["version"] if release else None,
            "release_id": release["release_id"] if release else None,
            "release_state": release["state"] if release else None,
        })


@extend_schema_field({"type": "string", "example": "0.5,0.5,0.5"})
class _Triple(serializers.Field):
    """Three numbers (R, G, B): "0.5,0.5,0.5" or a JSON list."""

    def to_internal_value(self, data):
        try:
            return triple_parse(data)
        except (TypeError, ValueError):
            raise serializers.ValidationError("three numbers (R, G, B), e.g. 0.5,0.5,0.5") from None


@extend_schema_field({"type": "string", "example": "ants,bees"})
class _Labels(serializers.Field):
    """Label names in output order: a JSON list, one per line, or comma-separated."""

    def to_internal_value(self, data):
        try:
            return labels_parse(data)
        except ValueError:
            raise serializers.ValidationError("a JSON list of names, or names separated by commas") from None


class VersionImportInput(serializers.Serializer):
    file = serializers.FileField(help_text="ONNX, ExecuTorch .pte, TFLite, Core ML .mlmodel or a zipped .mlpackage.")
    labels = _Labels(required=False, help_text="Output order; only when the file carries none.")
    input_size = serializers.IntegerField(required=False, min_value=1, max_value=4096)
    resize = serializers.IntegerField(required=False, min_value=1, max_value=8192)
    mean = _Triple(required=False, help_text="Per channel (R,G,B), pixels scaled to [0, 1].")
    std = _Triple(required=False)
    release_notes = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")


def version_import_output(version) -> dict:
    """An imported version as the staff API answers it."""
    artifact = version.artifacts.get()
    return {
        "model": version.project.slug,
        "version": version.version,
        "source": version.source,
        "imported_by": version.imported_by.get_username() if version.imported_by else None,
        "source_filename": version.source_filename,
        "source_sha256": version.source_sha256,
        "format": artifact.format,
        "variant": artifact.variant,
        "labels": version.labels,
        "input": artifact.preprocessing,
        "holdout_accuracy": (version.metrics or {}).get("accuracy_interval"),
        "note": (version.model_card.get("imported") or {}).get("note", ""),
    }


class ModelVersionImportApi(_StaffApi):
    """Publish a model trained elsewhere as the next version (verified first; nothing stored if refused)."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": VersionImportInput},
        responses={
            201: OpenApiTypes.OBJECT,
            400: OpenApiResponse(description="invalid_parameter, labels_required, preprocessing_required, "
                                             "invalid_labels, invalid_preprocessing"),
            404: OpenApiResponse(description="project_not_found"),
            413: OpenApiResponse(description="model_too_large"),
            415: OpenApiResponse(description="unsupported_model_format"),
            422: OpenApiResponse(description="model_load_failed, model_output_mismatch, model_input_mismatch, "
                                             "labels_conflict, preprocessing_conflict"),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        project = project_get(slug=name)
        data = _valid(VersionImportInput, request)
        upload = data["file"]
        version = model_version_import(
            project=project, file=upload, filename=upload.name or "",
            request=ImportRequest(
                labels=data.get("labels"), input_size=data.get("input_size"), resize=data.get("resize"),
                mean=data.get("mean"), std=data.get("std"),
            ),
            release_notes=data["release_notes"], user=request.user,
        )
        return Response(version_import_output(version), status=status.HTTP_201_CREATED)


def _valid(serializer_class, request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _reloaded(release: Release) -> Release:
    return Release.objects.select_related("channel__project", "version").get(pk=release.pk)


def _invalid(field: str, message: str):
    raise ValidationFailed(f"{field}: {message}", code="invalid_parameter", extra={"fields": {field: message}})


def _int_param(request: Request, name: str, *, default, low: int, high: int, required: bool = False):
    raw = request.query_params.get(name, "")
    if raw == "":
        if required:
            _invalid(name, "required")
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
        _invalid(name, f"an integer from {low} to {high}")
    return int(raw)


def _time_param(request: Request, name: str) -> dt.datetime:
    raw = request.query_params.get(name, "")
    if not raw:
        return timezone.now()
    try:
        # ASCII only: Django's parser would read Arabic-Indic or full-width digits as numbers.
        parsed = parse_datetime(raw.replace(" ", "+")) if raw.isascii() else None  # a "+" arrives as a space
    except ValueError:
        parsed = None
    if parsed is None:
        _invalid(name, "an ISO 8601 time, e.g. 2026-12-01T12:00:00Z")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, dt.UTC)
    try:
        # In UTC: PostgreSQL refuses offsets beyond +-15:59 ("-20:54" is valid ISO 8601).
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # a year-1 time west of UTC
        _invalid(name, "an ISO 8601 time, e.g. 2026-12-01T12:00:00Z")
