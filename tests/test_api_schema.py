"""The OpenAPI schema says what the server does (the contract test holds it to that)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def paths(client) -> dict:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()["paths"]


def _parameter(operation: dict, name: str) -> dict:
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_the_update_check_is_in_the_schema_with_its_key_and_answers(paths):
    update = paths["/api/mobile/v1/models/{name}/update"]
    assert set(update) == {"get"}  # POST and PUT are 405
    operation = update["get"]
    assert operation["security"] == [{"appKey": []}]
    assert {"200", "304", "400", "401", "404", "429"} <= set(operation["responses"])
    assert _parameter(operation, "install_id")["required"] is True
    assert _parameter(operation, "platform")["schema"]["enum"] == ["android", "ios", "other"]


@pytest.mark.parametrize("path", ["/api/mobile/v1/models/{name}/versions/{version}/{variant}",
                                  "/api/mobile/v1/models/{name}/versions/{version}/{variant}/from/{from_version}",
                                  "/api/mobile/v1/models/{name}/telemetry", "/api/mobile/v1/models/{name}/feedback"])
def test_every_app_endpoint_declares_the_app_key(paths, path):
    (operation,) = paths[path].values()
    assert operation["security"] == [{"appKey": []}]
    assert not any(p["name"] == "X-App-Key" for p in operation.get("parameters", []))
    assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}


def test_the_bounds_the_server_enforces_are_in_the_schema(client, paths):
    limit = _parameter(paths["/api/v1/projects/{slug}/leaderboards/{period}/"]["get"], "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 500)
    key = _parameter(paths["/api/v1/photos/"]["post"], "Idempotency-Key")["schema"]
    assert (key["minLength"], key["maxLength"]) == (1, 100)
    components = client.get("/api/schema/?format=json").json()["components"]["schemas"]
    body = paths["/api/v1/me/"]["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = components[body.rsplit("/", 1)[1]]["properties"]["display_name"]
    assert (name["minLength"], name["maxLength"]) == (3, 40)


def test_telemetry_is_offered_as_json_only(paths):
    body = paths["/api/mobile/v1/models/{name}/telemetry"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/json"]


def test_every_error_answer_has_the_json_error_body(paths):
    for item in paths.values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}, (operation["operationId"], status)
