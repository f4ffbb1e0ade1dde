"""The leaderboards web page: one project at a time, tabs for day, week and all time."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from challenges.selectors import project_list_active
from leaderboards.models import ScoreTotal
from leaderboards.selectors import leaderboard_get, leaderboard_rank_for


def leaderboard_page(request: HttpRequest) -> HttpResponse:
    """?project=<slug>&period=day|week|all (defaults: first active project, this week)."""
    projects = list(project_list_active())
    project = next((p for p in projects if p.slug == request.GET.get("project")), projects[0] if projects else None)
    period = request.GET.get("period")
    if period not in ScoreTotal.Period.values:
        period = ScoreTotal.Period.WEEK
    board = leaderboard_get(project=project, period=period) if project else None
    me = (
        leaderboard_rank_for(project=project, period=period, volunteer=request.user)
        if project and request.user.is_authenticated
        else None
    )
    return render(
        request,
        "leaderboards/board.html",
        {"projects": projects, "project": project, "period": period, "board": board,
         "periods": ScoreTotal.Period.choices, "me": me},
    )
