"""The volunteer's own place on each board, even outside the top `limit` (API and page)."""
import pytest
from rest_framework.test import APIClient

from accounts.services import profile_update
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _me(user, period="all", **query):
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(f"/api/v1/projects/ants-bees/leaderboards/{period}/", query)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def three_volunteers(project, send_photo, approve):
    leader, middle, last = UserFactory.create_batch(3)
    for user, count in [(leader, 3), (middle, 2), (last, 1)]:
        for _ in range(count):
            approve(send_photo(user, project))
    return leader, middle, last


def test_me_gives_my_rank_even_outside_the_limit(three_volunteers):
    leader, middle, last = three_volunteers
    board = _me(last, limit=1)
    assert [e["display_name"] for e in board["entries"]] == [leader.profile.display_name]
    me = board["me"]
    assert me["rank"] == 3 and me["photos"] == 1 and me["on_board"] and me["ranked"] == 3
    assert isinstance(me["points"], int) and me["points"] > 0
    assert _me(middle, "day")["me"]["rank"] == 2


def test_anonymous_callers_get_no_me_and_volunteers_without_points_get_no_rank(three_volunteers, api):
    assert api.get("/api/v1/projects/ants-bees/leaderboards/all/").json()["me"] is None
    newcomer = _me(UserFactory())["me"]
    assert newcomer["rank"] is None and newcomer["photos"] == 0


def test_an_opted_out_volunteer_sees_where_they_would_stand_and_others_do_not(three_volunteers):
    leader, middle, last = three_volunteers
    profile_update(user=middle, public_on_leaderboards=False)
    me = _me(middle)["me"]
    assert me["rank"] == 2 and not me["on_board"] and me["ranked"] == 2
    assert _me(last)["me"]["rank"] == 2  # the hidden volunteer no longer counts above the others


def test_the_page_shows_my_rank(three_volunteers, client):
    client.force_login(three_volunteers[2])
    page = client.get("/leaderboards/?period=week").content.decode()
    assert "You: rank 3</strong> of 3" in page
