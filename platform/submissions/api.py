"""Volunteer and staff API for photos."""
from django.conf import settings
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from challenges.models import Challenge
from common.errors import ValidationFailed
from common.fields import StrictInput
from submissions.filters import ModerationPhotoFilter, PhotoFilter
from submissions.models import Photo
from submissions.opinion import photo_model_opinion, photo_next_step, photo_review_time
from submissions.selectors import photo_get_for_volunteer, photo_list_for_moderation, photo_list_for_volunteer
from submissions.services import NewPhoto, photo_delete, photo_moderate, photo_upload
from submissions.signed_urls import photo_copy_url

IDEMPOTENCY_HEADER = "Idempotency-Key"


class UploadRateThrottle(UserRateThrottle):
    """Burst limit on uploads per volunteer (scope `uploads`, PLATFORM_UPLOAD_RATE).

    DRF reads THROTTLE_RATES once into a class attribute; reading the setting on every
    request keeps it changeable (tests, settings overrides) like every other setting.
    """

    scope = "uploads"

    def get_rate(self) -> str:
        return settings.PLATFORM_UPLOAD_RATE


class PhotoOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    project = serializers.CharField(source="project.slug")
    label = serializers.CharField(source="label.name")
    challenge = serializers.IntegerField(source="challenge_id", allow_null=True)
    status = serializers.CharField()
    reject_reason = serializers.CharField()
    featured = serializers.BooleanField()
    near_duplicate = serializers.SerializerMethodField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    display_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    bonus = serializers.SerializerMethodField(help_text="Approved: why it earned a bonus (the model got it wrong).")
    model_opinion = serializers.SerializerMethodField(
        help_text="What the published model thinks of the photo: {label, confidence, agrees, unsure, message}; "
        "null until the upload follow-up has scored it (seconds after the upload) or without a published model."
    )
    next_step = serializers.SerializerMethodField(help_text="Plain words: what happens next, when points arrive.")

    @extend_schema_field({"type": "object", "nullable": True})
    def get_model_opinion(self, photo: Photo) -> dict | None:
        return photo_model_opinion(photo=photo)

    def get_next_step(self, photo: Photo) -> str:
        return photo_next_step(photo=photo, review_time=self.context.get("review_time"))

    def get_near_duplicate(self, photo: Photo) -> bool:
        return photo.near_duplicate_of_id is not None

    def get_bonus(self, photo: Photo) -> str | None:
        entries = getattr(photo, "bonus_entries", None)  # prefetched by photo_list_for_volunteer
        if photo.status != Photo.Status.APPROVED or not entries:
            return None
        return entries[0].reason

    def get_display_url(self, photo: Photo) -> str | None:
        return self._url(photo, "photo-display")

    def get_thumbnail_url(self, photo: Photo) -> str | None:
        return self._url(photo, "photo-thumbnail")

    def _url(self, photo: Photo, view_name: str) -> str | None:
        """A short-lived signed URL: it works with the API's token client, not only a session."""
        request = self.context.get("request")
        absolute = request.build_absolute_uri if request is not None else str
        return photo_copy_url(photo=photo, view_name=view_name, absolute=absolute)


class ModerationPhotoOutput(PhotoOutput):
    """What staff see in the queue: the flags and who sent it (a volunteer, an import or an app)."""

    volunteer = serializers.IntegerField(source="volunteer_id", allow_null=True)
    source = serializers.CharField()
    app = serializers.CharField(source="app_name", help_text="App feedback: the app key's name; else empty.")
    predicted_label = serializers.CharField(help_text="App feedback: what the app's model predicted.")
    model_version = serializers.IntegerField(allow_null=True, help_text="App feedback: the predicting version.")
    model_confidence = serializers.FloatField(allow_null=True)
    flag_model_disagreement = serializers.BooleanField()
    flag_suspicious_volume = serializers.BooleanField()


class PhotoListCreateApi(ListAPIView):
    """GET: my photos. POST: send a photo for a challenge (multipart)."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser]
    serializer_class = PhotoOutput
    filter_backends = [DjangoFilterBackend]
    filterset_class = PhotoFilter

    class Input(serializers.Serializer):
        challenge = serializers.IntegerField()
        label = serializers.CharField(max_length=64)
        image = serializers.FileField(allow_empty_file=True)

    def get_queryset(self) -> QuerySet[Photo]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no volunteer (drf-spectacular)
            return Photo.objects.none()
        return photo_list_for_volunteer(volunteer=self.request.user)

    def get_throttles(self):
        # Only sending is limited; listing one's photos is not.
        return [UploadRateThrottle()] if self.request.method == "POST" else super().get_throttles()

    @extend_schema(
        request={"multipart/form-data": Input},
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER,
                description="Optional. A retry with the same key returns the first result "
                "(header Idempotent-Replayed: true) instead of a second photo.",
            )
        ],
        responses={
            201: PhotoOutput,
            404: OpenApiResponse(description="not_found: no such challenge"),
            409: OpenApiResponse(description="duplicate_photo"),
            413: OpenApiResponse(description="file_too_large, too_many_pixels"),
            415: OpenApiResponse(description="not_an_image, unsupported_format, animated_image"),
            422: OpenApiResponse(description="idempotency_key_reused"),
            429: OpenApiResponse(description="throttled, daily_quota_exceeded (with Retry-After)"),
        },
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        challenge = get_object_or_404(Challenge.objects.select_related("project"), pk=data.validated_data["challenge"])
        image = data.validated_data["image"]
        result = photo_upload(
            new=NewPhoto(project=challenge.project, challenge=challenge, label_name=data.validated_data["label"],
                         upload=image, size=image.size, volunteer=request.user),
            idempotency_key=key,
        )
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        context = {"request": request, "review_time": photo_review_time(project_id=challenge.project_id)}
        body = PhotoOutput(result.photo, context=context).data
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)


class PhotoDetailApi(APIView):
    """GET: one of my photos. DELETE: withdraw one of my photos while it is pending."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=PhotoOutput)
    def get(self, request: Request, photo_id) -> Response:
        photo = photo_get_for_volunteer(volunteer=request.user, public_id=photo_id)
        context = {"request": request, "review_time": photo_review_time(project_id=photo.project_id)}
        return Response(PhotoOutput(photo, context=context).data)

    @extend_schema(responses={204: None, 404: OpenApiResponse(description="not_found"),
                              409: OpenApiResponse(description="not_pending")})
    def delete(self, request: Request, photo_id) -> Response:
        photo = photo_get_for_volunteer(volunteer=request.user, public_id=photo_id)
        photo_delete(photo=photo, volunteer=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header: 1-100 printable ASCII characters, or None."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not (0 < len(key) <= 100) or not key.isascii() or not key.isprintable():
        raise ValidationFailed(
            f"{IDEMPOTENCY_HEADER} must be 1 to 100 printable ASCII characters.", code="invalid_idempotency_key"
        )
    return key


class ModerationPhotoListApi(ListAPIView):
    """Staff: the moderation queue (pending photos by default)."""

    permission_classes = [IsAdminUser]
    serializer_class = ModerationPhotoOutput
    filter_backends = [DjangoFilterBackend]
    filterset_class = ModerationPhotoFilter

    def get_queryset(self) -> QuerySet[Photo]:
        return photo_list_for_moderation(status=None)


class PhotoModerateApi(APIView):
    """Staff: approve or reject one photo."""

    permission_classes = [IsAdminUser]

    class Input(StrictInput):
        decision = serializers.ChoiceField(choices=["approve", "reject"])
        reason = serializers.CharField(max_length=300, required=False, default="")

    @extend_schema(request=Input, responses=PhotoOutput)
    def post(self, request: Request, photo_id) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        photo = get_object_or_404(Photo, public_id=photo_id)
        photo = photo_moderate(
            photo=photo,
            moderator=request.user,
            approve=data.validated_data["decision"] == "approve",
            reason=data.validated_data["reason"],
        )
        return Response(PhotoOutput(photo, context={"request": request}).data)
