"""The leaderboards web page: one project at a time, tabs for day, week and all time."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from challenges.selectors import project_list_active
from leaderboards.models import ScoreTotal
from leaderboards.selectors import leaderboard_get, leaderboard_rank_for, volunteer_impact
from verification.selectors import verification_accuracy_for


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


@login_required
def impact_page(request: HttpRequest) -> HttpResponse:
    """My impact: my photos in each published model version (as bars), my rank on every board."""
    rows = volunteer_impact(volunteer=request.user)
    widest = max((row.photos_in_training + row.photos_in_holdout for row in rows), default=0) or 1
    versions = [
        {
            "row": row,
            "train_percent": round(100 * row.photos_in_training / widest, 1),
            "holdout_percent": round(100 * row.photos_in_holdout / widest, 1),
        }
        for row in rows
    ]
    ranks = [
        {
            "project": project,
            "periods": [
                (label, leaderboard_rank_for(project=project, period=period, volunteer=request.user))
                for period, label in (("day", "Today"), ("week", "This week"), ("all", "All time"))
            ],
        }
        for project in project_list_active()
    ]
    # My answers on gold photos (the verification's check photos), with their n and interval.
    verification = verification_accuracy_for(volunteer=request.user)
    return render(
        request,
        "leaderboards/impact.html",
        {"versions": versions, "ranks": ranks, "verification": verification},
    )
