"""Volunteer API: projects and today's challenge."""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from challenges.selectors import label_list_with_approved_counts, project_get, project_list_active
from challenges.services import challenge_get_or_generate_today


class LabelOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    target_count = serializers.IntegerField()


class LabelProgressOutput(LabelOutput):
    approved_count = serializers.IntegerField()


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
    labels = serializers.SerializerMethodField()

    def get_labels(self, challenge) -> list[str]:
        return [label.name for label in challenge.labels.all()]


class ProjectListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=ProjectOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(ProjectOutput(project_list_active(), many=True).data)


class ChallengeTodayApi(APIView):
    permission_classes = [AllowAny]

    class Output(ChallengeOutput):
        progress = LabelProgressOutput(many=True)

    @extend_schema(
        parameters=[OpenApiParameter("project", str, description="Project slug; optional when there is one.")],
        responses=Output,
    )
    def get(self, request: Request) -> Response:
        project = project_get(slug=request.query_params.get("project"))
        challenge = challenge_get_or_generate_today(project=project)
        challenge.progress = label_list_with_approved_counts(project=project)
        return Response(self.Output(challenge).data)
