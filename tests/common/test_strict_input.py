"""Input the schema rules out is a 400 naming the parameter, not a guess (common/fields.py)."""
from __future__ import annotations

import pytest

from tests.mobile_api.conftest import app_api, app_key  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", [{"newsletter_opt_in": "yes"}, {"newsletter_opt_in": 1},
                                  {"public_on_leaderboards": None}, {"display_name": 12345}])
def test_a_json_field_of_the_wrong_type_is_a_400_naming_it(volunteer_api, body):
    response = volunteer_api.patch("/api/v1/me/", body, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(body)


def test_json_booleans_and_form_strings_are_still_taken(volunteer_api):
    assert volunteer_api.patch("/api/v1/me/", {"newsletter_opt_in": True}, format="json").json()[
        "newsletter_opt_in"] is True
    assert volunteer_api.patch("/api/v1/me/", {"newsletter_opt_in": "false"}, format="multipart").json()[
        "newsletter_opt_in"] is False


@pytest.mark.parametrize("query", ["featured=null", "featured=yes", "status=", "label=", "challenge="])
def test_a_filter_value_that_is_empty_or_not_a_boolean_is_a_400(volunteer_api, query):
    response = volunteer_api.get(f"/api/v1/photos/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]["fields"]


def test_filters_still_filter(volunteer_api):
    assert volunteer_api.get("/api/v1/photos/?featured=false&status=pending").status_code == 200


@pytest.mark.parametrize("query", ["date=", "limit="])
def test_an_empty_leaderboard_parameter_is_a_400(api, project, query):
    response = api.get(f"/api/v1/projects/{project.slug}/leaderboards/week/?{query}")
    assert response.status_code == 400


def test_telemetry_takes_json_only_and_refuses_a_form_with_415(app_api, project):
    """The schema offers telemetry as JSON only; a form could not carry its list of events."""
    response = app_api.post("/api/mobile/v1/models/ants-bees/telemetry", {"install_id": "install-0001"},
                            format="multipart")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
