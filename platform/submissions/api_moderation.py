"""Staff API for moderation beyond approve/reject: relabel and feature one photo."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import ValidationFailed
from common.fields import StrictInput
from submissions.models import Photo
from submissions.moderation import photo_feature, photo_relabel


class ModeratedPhotoOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    project = serializers.CharField(source="project.slug")
    label = serializers.CharField(source="label.name")
    status = serializers.CharField()
    featured = serializers.BooleanField()
    featured_at = serializers.DateTimeField(allow_null=True)
    model_confidence = serializers.FloatField(allow_null=True)
    flag_model_disagreement = serializers.BooleanField()
    flag_suspicious_volume = serializers.BooleanField()
    near_duplicate = serializers.SerializerMethodField()

    def get_near_duplicate(self, photo) -> bool:
        return photo.near_duplicate_of_id is not None


# Top-level, uniquely named inputs: nested "Input" classes collide in the OpenAPI schema.
class PhotoRelabelInput(StrictInput):
    label = serializers.SlugField(max_length=64)


class PhotoFeatureInput(StrictInput):
    featured = serializers.BooleanField()


def _photo(photo_id) -> Photo:
    return get_object_or_404(Photo.objects.select_related("project", "label"), public_id=photo_id)


class PhotoRelabelApi(APIView):
    """Staff: move a photo to another label of its project."""

    permission_classes = [IsAdminUser]

    Input = PhotoRelabelInput

    @extend_schema(request=Input, responses=ModeratedPhotoOutput)
    def post(self, request: Request, photo_id) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        photo = _photo(photo_id)
        label = photo.project.labels.filter(name=data.validated_data["label"]).first()
        if label is None:
            raise ValidationFailed(
                f"{data.validated_data['label']!r} is not a label of project {photo.project.slug!r}.",
                code="label_not_in_project",
            )
        photo = photo_relabel(photo=photo, label=label, moderator=request.user)
        return Response(ModeratedPhotoOutput(photo).data)


class PhotoFeatureApi(APIView):
    """Staff: feature (or unfeature) an approved photo."""

    permission_classes = [IsAdminUser]

    Input = PhotoFeatureInput

    @extend_schema(request=Input, responses=ModeratedPhotoOutput)
    def post(self, request: Request, photo_id) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        photo = photo_feature(photo=_photo(photo_id), featured=data.validated_data["featured"], moderator=request.user)
        return Response(ModeratedPhotoOutput(photo).data)
