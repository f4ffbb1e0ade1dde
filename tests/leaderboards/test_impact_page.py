"""/me/impact/: my photos in each model version as bars, my rank on every board."""
import pytest

from tests.factories import UserFactory
from tests.leaderboards.test_impact import _entry, _publish

pytestmark = pytest.mark.django_db


def test_the_impact_page_draws_my_versions_and_shows_my_ranks(client, project, volunteer, send_photo, approve):
    mine = [approve(send_photo(volunteer, project)) for _ in range(3)]
    leader = UserFactory()
    for _ in range(5):
        approve(send_photo(leader, project))
    _publish(project, 1, [_entry(mine[0], "train")])
    _publish(project, 2, [_entry(mine[0], "train"), _entry(mine[1], "train"), _entry(mine[2], "holdout")])
    client.force_login(volunteer)
    page = client.get("/me/impact/").content.decode()
    assert "ants-bees version 2" in page and "learnt from 2 of my photos, tested on 1" in page
    assert "learnt from 1 of my photo, tested on 0" in page
    # Bars scaled to the widest version (3 photos): 2/3 and 1/3 of it.
    assert 'style="width: 66.7%"' in page and 'style="width: 33.3%"' in page
    assert page.count("#2</span>") == 3 and "of 2 ·" in page  # second today, this week and all time
    assert "My verification accuracy" not in page  # no number until verification data exists


def test_the_impact_page_without_photos_and_for_anonymous_visitors(client, project, volunteer):
    assert client.get("/me/impact/").status_code == 302  # to the login page
    client.force_login(volunteer)
    page = client.get("/me/impact/").content.decode()
    assert "No published model has used your photos yet" in page and "no points yet" in page
