"""Daily, weekly and all-time boards: read from totals only, public names only."""
import datetime as dt

import pytest
from django.utils import timezone

from accounts.services import profile_update
from leaderboards.selectors import leaderboard_get
from leaderboards.services import leaderboard_flag_set
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _board(api, period="all", **query):
    response = api.get(f"/api/v1/projects/ants-bees/leaderboards/{period}/", query)
    assert response.status_code == 200, response.content
    return response.json()


def test_board_query_count_does_not_grow_with_photos(
    project, send_photo, approve, django_assert_num_queries, api
):
    volunteers = UserFactory.create_batch(5)
    for volunteer in volunteers:
        approve(send_photo(volunteer, project))
    with django_assert_num_queries(1):
        small = leaderboard_get(project=project, period="all")
    for volunteer in volunteers:
        for _ in range(3):
            approve(send_photo(volunteer, project, label="bees"))
    with django_assert_num_queries(1):
        big = leaderboard_get(project=project, period="all")
    assert len(small.entries) == len(big.entries) == 5
    assert sum(entry.photos for entry in big.entries) == 20
    with django_assert_num_queries(2):  # the project, then the board
        assert len(_board(api)["entries"]) == 5


def test_board_ranks_by_points_and_shows_display_names_only(project, send_photo, approve, api):
    first, second = UserFactory(), UserFactory()
    profile_update(user=first, display_name="Ant Whisperer")
    for _ in range(2):
        approve(send_photo(first, project))
    approve(send_photo(second, project))
    board = _board(api, "day")
    assert [(e["rank"], e["display_name"], e["photos"], e["streak"]) for e in board["entries"]] == [
        (1, "Ant Whisperer", 2, 1), (2, second.profile.display_name, 1, 1),
    ]
    assert board["entries"][0]["points"] == 40  # whole points: 20 + 19.67 rounded
    body = str(board)
    for user in (first, second):
        assert user.username not in body and user.email not in body


def test_periods_and_date_parameter(project, volunteer, send_photo, approve, api):
    now = timezone.now()
    approve(send_photo(volunteer, project, sent_at=now - dt.timedelta(days=8)))
    approve(send_photo(volunteer, project))
    assert _board(api, "day")["entries"][0]["photos"] == 1
    assert _board(api, "week")["entries"][0]["photos"] == 1
    assert _board(api, "all")["entries"][0]["photos"] == 2
    old = (now - dt.timedelta(days=8)).date()
    assert _board(api, "day", date=old.isoformat())["entries"][0]["photos"] == 1
    assert _board(api, "day", date=(old - dt.timedelta(days=1)).isoformat())["entries"] == []
    assert _board(api, "week", date=old.isoformat())["period_start"] == (old - dt.timedelta(days=old.weekday())).isoformat()


def test_bad_period_date_and_project_are_json_errors(project, api):
    assert api.get("/api/v1/projects/ants-bees/leaderboards/month/").json()["error"]["code"] == "invalid_period"
    assert api.get("/api/v1/projects/ants-bees/leaderboards/day/?date=yesterday").status_code == 400
    assert api.get("/api/v1/projects/nope/leaderboards/day/").status_code == 404


def test_opted_out_hidden_and_disqualified_are_left_off_and_pinned_come_first(
    project, send_photo, approve, staff, api
):
    top, opted_out, hidden, cheat, pinned = UserFactory.create_batch(5)
    for user, count in [(top, 3), (opted_out, 2), (hidden, 2), (cheat, 4), (pinned, 1)]:
        for _ in range(count):
            approve(send_photo(user, project))
    profile_update(user=opted_out, public_on_leaderboards=False)
    leaderboard_flag_set(project=project, volunteer=hidden, action="hide", reason="Offensive name", actor=staff)
    leaderboard_flag_set(project=project, volunteer=cheat, action="disqualify", reason="Stock photos", actor=staff)
    leaderboard_flag_set(project=project, volunteer=pinned, action="pin", reason="Organiser's pick", actor=staff)
    for period in ("day", "week", "all"):
        entries = _board(api, period)["entries"]
        assert [(e["display_name"], e["pinned"]) for e in entries] == [
            (pinned.profile.display_name, True), (top.profile.display_name, False),
        ]
        assert [e["rank"] for e in entries] == [2, 1]
    # Disqualified: later approvals earn nothing.
    before = cheat.score_totals.get(period="all").points
    approve(send_photo(cheat, project))
    assert cheat.score_totals.get(period="all").points == before


def test_leaderboard_page_has_tabs_and_names(client, project, volunteer, send_photo, approve):
    approve(send_photo(volunteer, project))
    response = client.get("/leaderboards/?period=day")
    assert response.status_code == 200
    html = response.content.decode()
    assert volunteer.profile.display_name in html and volunteer.username not in html
    assert 'aria-current="page">Today' in html and "This week" in html and "All time" in html
    assert client.get("/leaderboards/?period=bogus&project=nope").status_code == 200
