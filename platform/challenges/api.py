"""Volunteer API: projects and today's challenge."""
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from challenges.selectors import challenge_is_open, label_list_with_progress, project_get, project_list_active
from challenges.services import challenge_get_or_generate_today


class LabelOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    target_count = serializers.IntegerField()
    example_photo_url = serializers.SerializerMethodField()

    def get_example_photo_url(self, label) -> str | None:
        if not label.example_photo:
            return None
        url = reverse("label-example-photo", args=[label.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url


class LabelProgressOutput(LabelOutput):
    """Both milestones: about 30 photos make a prototype, the target (200) a production model."""

    approved_count = serializers.IntegerField()
    prototype_target = serializers.IntegerField()
    prototype_fraction = serializers.FloatField(help_text="approved_count / prototype_target, at most 1.")
    target_fraction = serializers.FloatField(help_text="approved_count / target_count, at most 1.")


class ProjectOutput(serializers.Serializer):
    slug = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    time_zone = serializers.CharField()
    labels = LabelOutput(many=True, source="labels.all")


class ChallengeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    day = serializers.DateField()
    title = serializers.CharField()
    instructions = serializers.CharField()
    points_multiplier = serializers.DecimalField(max_digits=4, decimal_places=2)
    generated_reason = serializers.CharField()
    starts_at = serializers.TimeField(allow_null=True, help_text="Local time it opens; null: midnight.")
    ends_at = serializers.TimeField(allow_null=True, help_text="Local time it closes; null: end of day.")
    is_open = serializers.SerializerMethodField()
    labels = serializers.SerializerMethodField()

    def get_is_open(self, challenge) -> bool:
        return challenge_is_open(challenge=challenge, now=self.context.get("now"))

    def get_labels(self, challenge) -> list[str]:
        return [label.name for label in challenge.labels.all()]


class ProjectListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=ProjectOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(ProjectOutput(project_list_active(), many=True, context={"request": request}).data)


class ChallengeTodayApi(APIView):
    permission_classes = [AllowAny]

    class Output(ChallengeOutput):
        progress = LabelProgressOutput(many=True)

    @extend_schema(
        parameters=[OpenApiParameter("project", str, description="Project slug; optional when there is one.")],
        responses={200: Output, 404: OpenApiResponse(description="project_not_found, no challenge today")},
    )
    def get(self, request: Request) -> Response:
        project = project_get(slug=request.query_params.get("project"))
        now = timezone.now()
        challenge = challenge_get_or_generate_today(project=project, now=now)
        challenge.progress = label_list_with_progress(project=project)
        return Response(self.Output(challenge, context={"now": now, "request": request}).data)
