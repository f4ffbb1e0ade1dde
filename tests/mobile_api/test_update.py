"""The update check: manifest, ETag/304, no database on the hot path, invalidation, bad input."""
from __future__ import annotations

import json
import uuid

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from mobile_api import rollout, services
from mobile_api.models import AppKey
from tests.mobile_api.test_releases import BOTH, _fresh_memos, id_in_bucket  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/mobile/v1/models/ants-bees/update"


def poll(client, install_id: str = "install-0001", *, etag: str | None = None, **params):
    query = {"install_id": install_id, "app_version": "2.3.0", "platform": "android", "formats": "pte,onnx",
             **params}
    headers = {"HTTP_IF_NONE_MATCH": etag} if etag else {}
    return client.get(URL, {k: v for k, v in query.items() if v is not None}, **headers)


@pytest.fixture
def stable(project):
    return services.channel_create(project=project, name="stable")


@pytest.fixture
def released(project, stable, make_version):
    """v1 (onnx and pte files) released to everyone on stable."""
    services.release_promote(channel=stable, version=make_version(project, 1, files=BOTH))
    return stable


def test_the_manifest_has_everything_an_app_needs(app_api, released, settings):
    response = poll(app_api)

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "private, no-cache" and response["ETag"].startswith('"')
    body = response.json()
    assert (body["model"], body["channel"], body["version"], body["reason"]) == ("ants-bees", "stable", 1, None)
    assert body["labels"] == ["ants", "bees"] and body["min_app_version"] == ""
    assert body["input"]["mean"] == [0.5, 0.5, 0.5] and body["input"]["channel_order"] == "RGB"
    # The accuracy keeps its meaning; the photos it rests on and its 95% interval stand beside it
    # (38 of 40 right: Wilson 0.835-0.986, computed for a version stored without one).
    assert body["metrics"] == {
        "holdout_accuracy": 0.95, "holdout_count": 40, "holdout_accuracy_ci95": [0.835, 0.9862]
    }
    assert body["withheld"] == []  # every measured file was offered (the card names the others and why)
    assert body["download"] == {"wifi_only": False, "charging_only": False, "max_cellular_bytes": 20971520}
    assert body["poll_interval_seconds"] == 21600
    bucket = rollout.bucket_of(salt="ants-bees/stable", install_id="install-0001")
    assert body["rollout"] == {"bucket": bucket, "percent": 100, "release_state": "active"}
    # The accepted formats only, in the install's order of preference.
    assert [(a["format"], a["variant"]) for a in body["artifacts"]] == [("pte", "int8"), ("onnx", "fp32")]
    pte = body["artifacts"][0]
    assert pte["runtime"] == "executorch" and pte["precision"] == "int8" and pte["size"] == len(BOTH[("pte", "int8")])
    assert pte["download_url"] == f"{settings.PLATFORM_BASE_URL}/api/mobile/v1/models/ants-bees/versions/1/pte-int8"
    assert set(pte) >= {"sha256", "companions", "deltas", "input", "metrics", "recommended"}

    only_onnx = poll(app_api, formats="onnx").json()
    assert [a["format"] for a in only_onnx["artifacts"]] == ["onnx"]


def test_tflite_and_core_ml_files_reach_the_apps_that_accept_them(app_api, project, stable, make_version):
    from training.ml.formats import STRUCTURE_ONLY

    tensors = {"inputs": [{"name": "serving_default_args_0", "shape": [1, 3, 224, 224], "dtype": "int8",
                           "quantization": {"scale": 0.0078, "zero_point": -1}}],
               "outputs": [{"name": "serving_default_output_0", "shape": [1, 2], "dtype": "float32",
                            "quantization": None}]}
    files = {("onnx", "fp32"): b"onnx" * 500, ("tflite", "int8"): b"TFL3" * 300, ("mlpackage", "pal4"): b"PK" * 200}
    version = make_version(project, 1, files=files)
    version.artifacts.filter(format="tflite").update(measurements={"accuracy": 0.95, "tensors": tensors})
    version.artifacts.filter(format="mlpackage").update(
        precision="pal4", measurements={"accuracy": 0.94, "estimated": True, "note": STRUCTURE_ONLY})
    services.release_promote(channel=stable, version=version)

    body = poll(app_api, formats="tflite,onnx").json()
    assert [a["format"] for a in body["artifacts"]] == ["tflite", "onnx"]
    tflite = body["artifacts"][0]
    assert (tflite["runtime"], tflite["delegate"], tflite["file_extension"]) == ("litert", None, "tflite")
    assert tflite["tensors"] == tensors and tflite["precision"] == "int8"
    assert tflite["download_url"].endswith("/api/mobile/v1/models/ants-bees/versions/1/tflite-int8")
    assert "tensors" not in body["artifacts"][1] and "file_extension" not in body["artifacts"][1]  # ONNX as before

    coreml = poll(app_api, "install-0002", formats="mlpackage").json()["artifacts"]
    assert [(a["format"], a["variant"], a["runtime"]) for a in coreml] == [("mlpackage", "pal4", "coreml")]
    assert coreml[0]["verified"] == STRUCTURE_ONLY and coreml[0]["content_type"] == "application/zip"
    download = app_api.get(coreml[0]["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert 'filename="ants-bees-v1-mlpackage-pal4.mlpackage.zip"' in download["Content-Disposition"]
    assert b"".join(download.streaming_content) == files[("mlpackage", "pal4")]


def test_an_unchanged_answer_is_a_304_and_a_move_changes_it(app_api, project, released, make_version):
    first = poll(app_api)
    etag = first["ETag"]

    again = poll(app_api, etag=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    # Another format list is another body: not a 304.
    assert poll(app_api, etag=etag, formats="onnx").status_code == 200

    services.release_promote(channel=released, version=make_version(project, 2))
    changed = poll(app_api, etag=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag and changed.json()["version"] == 2


def test_the_hot_path_makes_no_database_query(app_api, released, django_assert_num_queries, settings):
    settings.PLATFORM_UPDATE_LOCAL_TTL = 60
    etag = poll(app_api)["ETag"]  # warms the key and the channel document

    with django_assert_num_queries(0):
        assert poll(app_api, "install-0002").status_code == 200
        assert poll(app_api, etag=etag).status_code == 304
    # Even with no process memo: Django's cache alone answers.
    settings.PLATFORM_UPDATE_LOCAL_TTL = 0
    with django_assert_num_queries(0):
        assert poll(app_api, "install-0003").status_code == 200
        assert poll(app_api, etag=etag).status_code == 304


def test_a_cold_cache_is_rebuilt_from_the_database(app_api, released):
    from django.core.cache import cache

    expected = poll(app_api).json()
    cache.clear()  # a restart of the cache
    rebuilt = poll(app_api)
    assert rebuilt.status_code == 200 and rebuilt.json() == {**expected, "rollout": rebuilt.json()["rollout"]}


def test_promote_rollout_and_rollback_are_visible_on_the_next_poll(app_api, project, released, make_version):
    inside = id_in_bucket("ants-bees/stable", lambda b: b < 30)
    outside = id_in_bucket("ants-bees/stable", lambda b: b >= 60)
    release = services.release_promote(channel=released, version=make_version(project, 2), rollout_percent=30)
    assert poll(app_api, inside).json()["version"] == 2
    assert poll(app_api, outside).json()["version"] == 1

    services.release_rollout(release=release, rollout_percent=100)
    assert poll(app_api, outside).json()["version"] == 2

    services.release_rollback(release=release, reason="bad")
    assert poll(app_api, inside, current_version="2").json()["version"] == 1


def test_paused_release_keeps_installs_on_it(app_api, project, released, make_version):
    inside = id_in_bucket("ants-bees/stable", lambda b: b < 50)
    release = services.release_promote(channel=released, version=make_version(project, 2), rollout_percent=50)
    services.release_pause(release=release)

    assert poll(app_api, inside, current_version="2").json()["version"] == 2
    paused = poll(app_api, inside, current_version="1").json()
    assert paused["version"] == 1 and paused["rollout"]["release_state"] == "active"


def test_no_matching_release_says_so(app_api, project, stable, make_version):
    services.release_promote(channel=stable, version=make_version(project, 1), platforms=["ios"])

    body = poll(app_api).json()
    assert body["version"] is None and body["reason"] == "no_release_matches"
    assert body["poll_interval_seconds"] == 21600 and "artifacts" not in body


def test_keys_missing_unknown_or_revoked_get_401(app_key, released, api):
    assert poll(api).status_code == 401
    api.credentials(HTTP_X_APP_KEY="mk_00000000_not-a-key")
    unknown = poll(api)
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "app_key_invalid"

    row, key = app_key
    api.credentials(HTTP_X_APP_KEY=key)
    assert poll(api).status_code == 200
    services.app_key_revoke(app_key=row)
    revoked = poll(api)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "app_key_invalid"
    assert AppKey.objects.get(pk=row.pk).revoked_at is not None


def test_unknown_model_or_channel_is_404_and_remembered(app_api, released, django_assert_num_queries):
    missing = app_api.get("/api/mobile/v1/models/wasps/update", {
        "install_id": "install-0001", "app_version": "1.0", "platform": "ios", "formats": "onnx"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    no_channel = poll(app_api, channel="nightly")
    assert no_channel.status_code == 404 and no_channel.json()["error"]["code"] == "channel_not_found"
    with django_assert_num_queries(0):  # the negative answers are cached: a flood stays off the database
        assert poll(app_api, channel="nightly").status_code == 404


def test_a_new_channel_is_found_at_once(app_api, project, released):
    assert poll(app_api, channel="beta").status_code == 404
    services.channel_create(project=project, name="beta")
    assert poll(app_api, channel="beta").status_code == 200


@pytest.mark.parametrize("field,value", [
    ("install_id", "short"), ("install_id", "x" * 129), ("install_id", "has space!"), ("install_id", None),
    ("app_version", "2.x"), ("app_version", "1.2.3.4.5"), ("app_version", "9999999"), ("app_version", ""),
    ("platform", "windows"), ("platform", None),
    ("formats", ""), ("formats", "keras"), ("formats", "onnx,coreml"), ("formats", ",,,"),
    ("current_version", "0"), ("current_version", "-1"), ("current_version", "1e9"), ("current_version", "٣"),
    ("current_version", "9" * 30),
    ("channel", "no/slash"), ("channel", "x" * 51),
    # Anchored, ASCII-only: a trailing newline is not stripped (nor bucketed as another id),
    # and Arabic-Indic or full-width digits are not digits here.
    ("install_id", "sec-install-0001\n"), ("install_id", " sec-install-0001"), ("app_version", "1.0.0\n"),
    ("app_version", "\u0661.0.0"), ("app_version", "\uff11.0"), ("channel", "stable\n"), ("formats", "onnx\n"),
    ("formats", "onnx, pte"),
])
def test_malformed_parameters_are_400_naming_the_field(app_api, released, field, value):
    response = poll(app_api, **{field: value})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and field in error["fields"]


def test_query_string_garbage_never_500s(app_api, released):
    for query in ("", "install_id", "install_id=&formats=", "%ff%fe=%00", "install_id=install-0001&install_id=b",
                  "formats=" + "onnx," * 2000, "a=" + "%" * 3000, "install_id=install-0001&app_version=1&platform="
                  "android&formats=onnx&current_version=%00"):
        response = app_api.get(f"{URL}?{query}")
        assert 400 <= response.status_code < 500, (query[:40], response.status_code)
    assert app_api.post(URL).status_code == 405
    long_name = app_api.get(URL.replace("ants-bees", "a" * 300) + "?install_id=install-0001&app_version=1"
                                                                "&platform=ios&formats=onnx")
    assert long_name.status_code == 404 and long_name.json()["error"]["code"] == "model_not_found"


def test_floods_get_429_with_retry_after(app_key, released, api):
    row, key = app_key
    row.rate_limit_per_minute = 3
    row.save()
    api.credentials(HTTP_X_APP_KEY=key)
    answers = [poll(api).status_code for _ in range(4)]
    assert answers[:3] == [200, 200, 200] and answers[3] == 429
    limited = poll(api)
    assert int(limited["Retry-After"]) > 0 and limited.json()["error"]["code"] == "rate_limited"
    assert poll(api, "another-install").status_code == 200  # per install


def test_the_static_manifest_answers_like_the_endpoint(app_api, project, released, make_version):
    services.release_promote(channel=released, version=make_version(project, 2, files=BOTH), rollout_percent=35)
    with default_storage.open("manifests/ants-bees/stable.json") as fh:
        document = json.load(fh)

    for _n in range(60):
        install_id = f"static-{uuid.uuid4().hex}"
        body = poll(app_api, install_id).json()
        who = rollout.Install(install_id, "2.3.0", "android", ("pte", "onnx"))
        static = rollout.resolve(document, who)
        assert static["version"] == body["version"]
        assert {a["sha256"] for a in static["manifest"]["artifacts"]} == {a["sha256"] for a in body["artifacts"]}


def test_latest_serves_the_stable_release_that_is_out_to_everyone(api, project, released, make_version):
    services.release_promote(channel=released, version=make_version(project, 2), rollout_percent=10)

    latest = api.get("/api/mobile/v1/models/ants-bees/latest")
    assert latest.status_code == 200 and latest.json()["version"] == 1


def test_update_is_a_plain_view_without_session_or_csrf(released, app_key):
    """A plain Django view: it works with no DRF authentication, CSRF or session at all."""
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_X_APP_KEY=app_key[1])
    assert poll(client).status_code == 200
    # Writes are a JSON 405 naming the allowed method (PROTOCOL.md), not Django's CSRF page.
    for method in (client.post, client.put, client.patch, client.delete):
        refused = method(URL, data=b"{}", content_type="application/json")
        assert refused.status_code == 405, (method, refused.content[:80])
        assert refused["Allow"] == "GET"
        assert refused.json()["error"]["code"] == "method_not_allowed"
