"""Leaderboards (public) and the volunteer's impact on published models."""
from __future__ import annotations

import datetime as dt

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from challenges.selectors import project_get
from leaderboards.selectors import leaderboard_get, leaderboard_rank_for, volunteer_impact


class BoardEntryOutput(serializers.Serializer):
    rank = serializers.IntegerField()
    display_name = serializers.CharField()
    points = serializers.IntegerField()
    photos = serializers.IntegerField()
    streak = serializers.IntegerField()
    pinned = serializers.BooleanField()


class MyRankOutput(serializers.Serializer):
    rank = serializers.IntegerField(allow_null=True, help_text="Null without points in the period.")
    points = serializers.IntegerField()
    photos = serializers.IntegerField()
    on_board = serializers.BooleanField(help_text="False when opted out or hidden: only you see this rank.")
    ranked = serializers.IntegerField(help_text="How many volunteers the board ranks.")


class BoardOutput(serializers.Serializer):
    project = serializers.CharField(source="project.slug")
    period = serializers.CharField()
    period_start = serializers.DateField()
    entries = BoardEntryOutput(many=True)
    me = MyRankOutput(allow_null=True, help_text="The caller's own place (even outside `limit`); null when anonymous.")


class LeaderboardApi(APIView):
    """GET /api/v1/projects/<slug>/leaderboards/<day|week|all>/?date=YYYY-MM-DD"""

    permission_classes = [AllowAny]

    class Query(serializers.Serializer):
        date = serializers.DateField(required=False)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)

    @extend_schema(
        parameters=[
            OpenApiParameter("period", str, OpenApiParameter.PATH, enum=["day", "week", "all"]),
            OpenApiParameter("date", dt.date, description="A day in the period (project time zone); default today."),
            OpenApiParameter("limit", int, description="At most this many entries (1-500, default 100)."),
        ],
        responses=BoardOutput,
    )
    def get(self, request: Request, slug: str, period: str) -> Response:
        # A plain dict: in a QueryDict, DRF reads `?date=` as "not given"; here it is a 400.
        query = self.Query(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        project = project_get(slug=slug)
        day = query.validated_data.get("date")
        board = leaderboard_get(project=project, period=period, day=day, limit=query.validated_data["limit"])
        me = (
            leaderboard_rank_for(project=project, period=period, volunteer=request.user, day=day)
            if request.user.is_authenticated
            else None
        )
        return Response(BoardOutput({**vars(board), "me": me}).data)


class ImpactOutput(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    photos_in_training = serializers.IntegerField()
    photos_in_holdout = serializers.IntegerField()


class VolunteerImpactApi(APIView):
    """GET /api/v1/me/impact/: my photos in each published model version."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ImpactOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(ImpactOutput(volunteer_impact(volunteer=request.user), many=True).data)
