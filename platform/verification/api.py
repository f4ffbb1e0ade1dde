"""Verification API: the next task, a vote; staff: reverse an automatic decision, suspicious pairs."""
from __future__ import annotations

import re

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from challenges.models import Project
from common.errors import ValidationFailed
from verification.models import VerificationDecision, VerificationTask
from verification.selectors import pair_list_suspicious
from verification.services import decision_reverse, task_next, task_vote


class VoteRateThrottle(UserRateThrottle):
    """Votes per volunteer (scope `verification_votes`, PLATFORM_VERIFY_RATE), counted in the cache."""

    scope = "verification_votes"

    def get_rate(self) -> str:
        return settings.PLATFORM_VERIFY_RATE


class TaskOutput(serializers.Serializer):
    """A task as the volunteer sees it: no uploader, no photo id, nothing that tells gold apart."""

    id = serializers.UUIDField(source="public_id")
    project = serializers.CharField(source="project.slug")
    label = serializers.CharField(source="label_asked.name")
    question = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()

    def get_question(self, task: VerificationTask) -> str:
        return f"Is this {task.label_asked.name}?"

    def get_image_url(self, task: VerificationTask) -> str:
        path = reverse("verification-image", kwargs={"task_id": task.public_id})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class VoteInput(serializers.Serializer):
    answer = serializers.ChoiceField(choices=VerificationTask.Answer.values)


class VoteOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    answer = serializers.CharField()


SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}", re.ASCII)


def project_from_query(request: Request) -> Project:
    slug = request.query_params.get("project", "")
    if not slug:
        raise ValidationFailed("project: give the project's slug (?project=...).", code="invalid",
                               extra={"fields": {"project": "required"}})
    if not SLUG.fullmatch(slug):  # no such project (and no NUL byte for the database to choke on)
        raise Http404("No such project.")
    return get_object_or_404(Project, slug=slug)


class VerificationNextApi(APIView):
    """The volunteer's next photo to verify in a project (204 when nothing is left)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("project", str, required=True)],
        responses={200: TaskOutput, 204: None, 403: OpenApiResponse(description="not_taking_part"),
                   404: OpenApiResponse(description="project_not_found")},
    )
    def get(self, request: Request) -> Response:
        task = task_next(volunteer=request.user, project=project_from_query(request))
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(TaskOutput(task, context={"request": request}).data)


class VerificationVoteApi(APIView):
    """Answer a task: yes, no or unsure. Someone else's task: 404; a second answer: 409."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [VoteRateThrottle]

    @extend_schema(request=VoteInput, responses={200: VoteOutput, 404: OpenApiResponse(description="not_found"),
                                                 409: OpenApiResponse(description="already_voted"),
                                                 429: OpenApiResponse(description="throttled")})
    def post(self, request: Request, task_id) -> Response:
        data = VoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        task = task_vote(task_id=task_id, volunteer=request.user, answer=data.validated_data["answer"])
        return Response(VoteOutput(task).data)


class DecisionReverseInput(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, default="")


class DecisionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    photo = serializers.UUIDField(source="photo.public_id")
    outcome = serializers.CharField()
    yes_weight = serializers.FloatField()
    no_weight = serializers.FloatField()
    votes = serializers.JSONField()
    suggested_label = serializers.CharField()
    created_at = serializers.DateTimeField()
    reversed_at = serializers.DateTimeField(allow_null=True)


class VerificationDecisionReverseApi(APIView):
    """Staff: take an automatic decision back (photo pending again, points reversed)."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=DecisionReverseInput, responses={200: DecisionOutput,
                                                            409: OpenApiResponse(description="already_reversed")})
    def post(self, request: Request, decision_id: int) -> Response:
        data = DecisionReverseInput(data=request.data)
        data.is_valid(raise_exception=True)
        decision = get_object_or_404(VerificationDecision.objects.select_related("photo"), pk=decision_id)
        decision = decision_reverse(decision=decision, moderator=request.user, reason=data.validated_data["reason"])
        return Response(DecisionOutput(decision).data)


class PairOutput(serializers.Serializer):
    volunteer_a = serializers.IntegerField()
    volunteer_b = serializers.IntegerField()
    observed = serializers.IntegerField()
    expected = serializers.FloatField()
    ratio = serializers.FloatField()


class VerificationPairsApi(APIView):
    """Staff: pairs of accounts that verified each other's photos far more often than chance."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[OpenApiParameter("project", str, required=True)],
        responses={200: PairOutput(many=True), 404: OpenApiResponse(description="project_not_found")},
    )
    def get(self, request: Request) -> Response:
        project = project_from_query(request)
        return Response(PairOutput(pair_list_suspicious(project_id=project.pk), many=True).data)
