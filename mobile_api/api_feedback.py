"""The misprediction feedback endpoint (what it checks and stores: mobile_api/feedback.py)."""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import PayloadTooLarge
from mobile_api.auth import HEADER, app_identity_from_request, rate_limit_check
from mobile_api.feedback import feedback_create
from mobile_api.fields import install_id_field, name_field

# Room for the multipart framing and the small text fields around the photo.
_FORM_OVERHEAD_BYTES = 64 * 1024


class FeedbackInput(serializers.Serializer):
    """The multipart form of a misprediction report."""

    install_id = install_id_field()
    photo = serializers.FileField(allow_empty_file=True, help_text="JPEG, PNG, WebP or HEIC.")
    predicted_label = name_field(max_length=64, help_text="What the app's model predicted.")
    label = name_field(max_length=64, help_text="What the user says it is: one of the model's labels.")
    version = serializers.IntegerField(
        required=False, min_value=1, max_value=2**31 - 1, help_text="The model version that made the prediction."
    )


class FeedbackOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    status = serializers.CharField()


class FeedbackCreateApi(APIView):
    """An app reports a misprediction; the photo enters the moderation queue as its contribution."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": FeedbackInput},
        parameters=[OpenApiParameter(HEADER, str, OpenApiParameter.HEADER, required=True)],
        responses={
            201: FeedbackOutput,
            400: OpenApiResponse(description="invalid (naming the field), unknown_label, unknown_version"),
            401: OpenApiResponse(description="app_key_invalid"),
            404: OpenApiResponse(description="model_not_found"),
            409: OpenApiResponse(description="duplicate_photo (already received: nothing to resend)"),
            413: OpenApiResponse(description="file_too_large, too_many_pixels"),
            415: OpenApiResponse(description="not_an_image, unsupported_format, animated_image"),
            429: OpenApiResponse(description="rate_limited (with Retry-After)"),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        identity = app_identity_from_request(request)
        _refuse_oversized_body(request)
        data = FeedbackInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        rate_limit_check(identity, install_id=values["install_id"], scope="feedback")
        photo = feedback_create(
            identity=identity, name=name, photo=values["photo"], predicted_label=values["predicted_label"],
            label=values["label"], version=values.get("version"),
        )
        return Response(FeedbackOutput(photo).data, status=status.HTTP_201_CREATED)


def _refuse_oversized_body(request: Request) -> None:
    """413 from the Content-Length alone, before the body is read and spooled to disk.

    The service checks the photo's own size again (a chunked request has no Content-Length).
    """
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    limit = settings.PLATFORM_FEEDBACK_MAX_BYTES
    if length > limit + _FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(
            f"The request is {length} bytes; feedback photos are limited to {limit} bytes.", code="file_too_large"
        )
