"""The telemetry endpoints: apps report (202), staff read a channel's release health.

What a report means and the guard that acts on it: mobile_api/telemetry.py.
"""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import PayloadTooLarge
from common.fields import StrictInput
from common.parsers import JSONParser
from mobile_api.auth import HEADER, app_identity_from_request, rate_limit_check
from mobile_api.fields import exact_field, install_id_field, name_field
from mobile_api.telemetry import (
    ERROR_CLASS,
    LATENCY_BOUNDS_MS,
    MAX_EVENTS,
    MAX_LATENCY_MS,
    MAX_LATENCY_SAMPLES,
    MAX_REPORT_BYTES,
    channel_health_list,
    release_health_summary,
    telemetry_record,
)

# --- input -----------------------------------------------------------------------------------


class LatencyField(serializers.FloatField):
    """A latency in ms: a finite number from 0 to MAX_LATENCY_MS (true/false are not numbers)."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class TelemetryEventInput(StrictInput):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    format = name_field(max_length=16)
    variant = name_field(max_length=40)
    event = serializers.ChoiceField(choices=["downloaded", "loaded", "load_failed", "inference"])
    error_class = exact_field(
        ERROR_CLASS, max_length=80, required=False, allow_null=True,
        help_text="load_failed only: the runtime's error class, e.g. InvalidProgram.",
    )
    latency_ms = serializers.ListField(
        child=LatencyField(min_value=0, max_value=MAX_LATENCY_MS), min_length=1, max_length=MAX_LATENCY_SAMPLES,
        required=False, allow_null=True, help_text=f"inference only: 1 to {MAX_LATENCY_SAMPLES} latencies in ms.",
    )

    def validate(self, attrs: dict) -> dict:
        # Each kind of event carries exactly its own detail: a stray one is a client bug.
        errors = {}
        kind = attrs["event"]
        if kind == "load_failed" and not attrs.get("error_class"):
            errors["error_class"] = "Required for load_failed."
        if kind != "load_failed" and attrs.get("error_class"):
            errors["error_class"] = "Only load_failed events carry an error class."
        if kind == "inference" and not attrs.get("latency_ms"):
            errors["latency_ms"] = "Required for inference."
        if kind != "inference" and attrs.get("latency_ms"):
            errors["latency_ms"] = "Only inference events carry latencies."
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class TelemetryReportInput(StrictInput):
    install_id = install_id_field()
    channel = name_field(max_length=40, default="stable")
    events = serializers.ListField(child=TelemetryEventInput(), min_length=1, max_length=MAX_EVENTS)


# --- views ---------------------------------------------------------------------------------------


class TelemetryReportApi(APIView):
    """An app reports what happened to the model versions it downloaded and ran (202)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    # A report is nested JSON (a list of events); forms cannot carry it: 415 for them.
    parser_classes = [JSONParser]

    @extend_schema(
        request={"application/json": TelemetryReportInput},
        parameters=[OpenApiParameter(HEADER, str, OpenApiParameter.HEADER, required=True)],
        responses={
            202: OpenApiResponse(description="accepted"),
            400: OpenApiResponse(description="invalid (naming the field), unknown_release, unknown_artifact"),
            401: OpenApiResponse(description="app_key_invalid"),
            404: OpenApiResponse(description="model_not_found, channel_not_found"),
            413: OpenApiResponse(description="report_too_large"),
            429: OpenApiResponse(description="rate_limited (with Retry-After)"),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        identity = app_identity_from_request(request)
        _refuse_oversized_report(request)
        data = TelemetryReportInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        # After validation: malformed reports cost no database work; valid ones are limited.
        rate_limit_check(identity, install_id=values["install_id"], scope="telemetry")
        telemetry_record(project_slug=name, channel=values["channel"], events=values["events"])
        return Response({"accepted": len(values["events"])}, status=status.HTTP_202_ACCEPTED)


def _refuse_oversized_report(request: Request) -> None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length > MAX_REPORT_BYTES:
        raise PayloadTooLarge(
            f"The report is {length} bytes; the limit is {MAX_REPORT_BYTES} (send at most {MAX_EVENTS} events).",
            code="report_too_large",
        )


class ChannelTelemetryApi(APIView):
    """Staff: every release of a channel with what apps reported about it, and the guard's settings."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: OpenApiResponse(description="channel_not_found")})
    def get(self, request: Request, name: str, channel: str) -> Response:
        found, releases = channel_health_list(project_slug=name, channel=channel)
        return Response(
            {
                "model": found.project.slug,
                "channel": found.name,
                "guard": {
                    "max_load_failure_rate": settings.PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE,
                    "min_load_samples": settings.PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES,
                },
                "latency_bounds_ms": list(LATENCY_BOUNDS_MS),
                "releases": [release_health_summary(release=release) for release in releases],
            }
        )
