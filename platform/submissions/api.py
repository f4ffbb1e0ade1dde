"""Volunteer and staff API for photos."""
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from challenges.models import Challenge
from submissions.models import Photo
from submissions.selectors import photo_list_for_moderation, photo_list_for_volunteer
from submissions.services import photo_create, photo_moderate


class PhotoOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    project = serializers.CharField(source="project.slug")
    label = serializers.CharField(source="label.name")
    challenge = serializers.IntegerField(source="challenge_id", allow_null=True)
    status = serializers.CharField()
    reject_reason = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class PhotoListCreateApi(ListAPIView):
    """GET: my photos. POST: send a photo for a challenge (multipart)."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser]
    serializer_class = PhotoOutput

    class Input(serializers.Serializer):
        challenge = serializers.IntegerField()
        label = serializers.CharField(max_length=64)
        image = serializers.FileField(allow_empty_file=True)

    def get_queryset(self) -> QuerySet[Photo]:
        return photo_list_for_volunteer(volunteer=self.request.user)

    @extend_schema(request=Input, responses={201: PhotoOutput})
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        challenge = get_object_or_404(Challenge.objects.select_related("project"), pk=data.validated_data["challenge"])
        image = data.validated_data["image"]
        photo = photo_create(
            project=challenge.project,
            challenge=challenge,
            label_name=data.validated_data["label"],
            upload=image,
            size=image.size,
            volunteer=request.user,
        )
        return Response(PhotoOutput(photo).data, status=status.HTTP_201_CREATED)


class ModerationPhotoListApi(ListAPIView):
    """Staff: the moderation queue (pending photos by default)."""

    permission_classes = [IsAdminUser]
    serializer_class = PhotoOutput

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=[*Photo.Status.values, "all"])])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Photo]:
        wanted = self.request.query_params.get("status", Photo.Status.PENDING)
        return photo_list_for_moderation(status=None if wanted == "all" else wanted)


class PhotoModerateApi(APIView):
    """Staff: approve or reject one photo."""

    permission_classes = [IsAdminUser]

    class Input(serializers.Serializer):
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
        return Response(PhotoOutput(photo).data)
