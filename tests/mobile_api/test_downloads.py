"""Model downloads: app key, rate limit, 404s, headers, byte ranges (resume), bad ranges, HEAD."""
import hashlib

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
URL = "/api/mobile/v1/models/ants-bees/versions/1/onnx-fp32"


@pytest.fixture
def published(project, make_version):
    """Version 1 of ants-bees with one ONNX fp32 file holding PAYLOAD."""
    return make_version(project, 1, files={("onnx", "fp32"): PAYLOAD})


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_download_serves_the_bytes_with_cache_headers(app_api, published):
    response = app_api.get(URL)

    assert response.status_code == 200
    assert body(response) == PAYLOAD
    assert response["Content-Length"] == str(len(PAYLOAD))
    assert response["ETag"] == f'"{hashlib.sha256(PAYLOAD).hexdigest()}"'
    assert response["Accept-Ranges"] == "bytes"
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    assert response["Content-Type"] == "application/octet-stream"
    assert 'filename="ants-bees-v1-onnx-fp32.onnx"' in response["Content-Disposition"]


def test_interrupted_download_resumes_and_the_whole_matches_the_manifest_sha256(app_api, published):
    artifact = published.artifacts.get()
    half = len(PAYLOAD) // 2 + 7
    first = body(app_api.get(URL))[:half]  # the connection dropped after `half` bytes

    rest = app_api.get(URL, HTTP_RANGE=f"bytes={half}-", HTTP_IF_RANGE=f'"{artifact.sha256}"')

    assert rest.status_code == 206
    assert rest["Content-Range"] == f"bytes {half}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
    assert rest["Content-Length"] == str(len(PAYLOAD) - half)
    assert rest["ETag"] == f'"{artifact.sha256}"' and rest["Accept-Ranges"] == "bytes"
    assert hashlib.sha256(first + body(rest)).hexdigest() == artifact.sha256


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=100-199", (100, 199)),
        ("bytes=-10", (len(PAYLOAD) - 10, len(PAYLOAD) - 1)),  # the last 10 bytes
        ("bytes=-999999", (0, len(PAYLOAD) - 1)),  # a suffix longer than the file: all of it
        ("bytes=10240-", None),  # starts at the end: nothing to send
        ("bytes=0-99999999999999999999", (0, len(PAYLOAD) - 1)),  # the end is clipped
        ("bytes=99999999999999999999-", None),
        ("bytes=5-2", None),
        ("bytes=abc", None),
        ("bytes=-0", None),
        ("bytes=-", None),
        ("bytes=", None),
        ("bytes=1-2-3", None),
        ("bytes=\u0661-", None),  # an Arabic-Indic digit is not a digit here

        ("bytes=" + "9" * 5000 + "-", None),  # past int()'s digit limit: still a 416, not a 500
    ],
)
def test_single_ranges_are_served_or_refused_with_416(app_api, published, header, expected):
    response = app_api.get(URL, HTTP_RANGE=header)

    if expected is None:
        assert response.status_code == 416
        assert response["Content-Range"] == f"bytes */{len(PAYLOAD)}"
        assert response.json()["error"]["code"] == "range_not_satisfiable"
        assert response["Cache-Control"] == "no-store"
    else:
        start, end = expected
        assert response.status_code == 206
        assert response["Content-Range"] == f"bytes {start}-{end}/{len(PAYLOAD)}"
        assert body(response) == PAYLOAD[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "0-5", "bytes=0-1, 3-4, 8-9"])
def test_multi_range_and_unknown_units_are_ignored_with_the_whole_file(app_api, published, header):
    response = app_api.get(URL, HTTP_RANGE=header)

    assert response.status_code == 200 and body(response) == PAYLOAD
    assert not response.has_header("Content-Range")


def test_if_range_with_an_old_etag_sends_the_whole_file(app_api, published):
    # The file changed since the partial download (here: a different tag): resuming would corrupt it.
    for stale in ('"0000"', f'W/"{published.artifacts.get().sha256}"', "Wed, 21 Oct 2015 07:28:00 GMT"):
        response = app_api.get(URL, HTTP_RANGE="bytes=100-", HTTP_IF_RANGE=stale)
        assert response.status_code == 200 and body(response) == PAYLOAD


def test_if_none_match_answers_304(app_api, published):
    etag = f'"{published.artifacts.get().sha256}"'
    for header in (etag, f'"other", W/{etag}', "*"):
        response = app_api.get(URL, HTTP_IF_NONE_MATCH=header)
        assert response.status_code == 304 and response["ETag"] == etag and response.content == b""
    assert app_api.get(URL, HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_head_gives_the_headers_without_the_body(app_api, published):
    response = app_api.head(URL)
    assert response.status_code == 200 and response.content == b""
    assert response["Content-Length"] == str(len(PAYLOAD))
    assert response["ETag"] == f'"{published.artifacts.get().sha256}"'

    ranged = app_api.head(URL, HTTP_RANGE="bytes=10-19")
    assert ranged.status_code == 206 and ranged["Content-Length"] == "10"


@pytest.mark.parametrize("key", [None, "", "mk_nope_nope", "x" * 500])
def test_downloads_need_a_valid_app_key(published, key):
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_X_APP_KEY=key)
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "app_key_invalid"


def test_revoked_key_is_refused(app_key, published):
    from django.utils import timezone

    from mobile_api.auth import app_key_forget

    row, key = app_key
    row.revoked_at = timezone.now()
    row.save()
    app_key_forget(row.key_sha256)
    client = APIClient()
    client.credentials(HTTP_X_APP_KEY=key)
    assert client.get(URL).status_code == 401


@pytest.mark.parametrize(
    "url",
    [
        "/api/mobile/v1/models/no-such-model/versions/1/onnx-fp32",
        "/api/mobile/v1/models/ants-bees/versions/9/onnx-fp32",
        "/api/mobile/v1/models/ants-bees/versions/1/onnx-int8",
        "/api/mobile/v1/models/ants-bees/versions/1/pte-fp32",
        "/api/mobile/v1/models/ants-bees/versions/1/onnx",
        "/api/mobile/v1/models/ants-bees/versions/99999999999999999999/onnx-fp32",
    ],
)
def test_unknown_model_version_or_variant_is_a_json_404(app_api, published, url):
    response = app_api.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "artifact_not_found"


def test_a_file_missing_from_storage_is_a_404_not_a_500(app_api, published):
    default_storage.delete(published.artifacts.get().file.name)
    response = app_api.get(URL)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_downloads_are_rate_limited_per_install(app_key, app_api, published):
    row, _ = app_key
    row.rate_limit_per_minute = 3
    row.save()
    from mobile_api.auth import app_key_forget

    app_key_forget(row.key_sha256)
    install = {"HTTP_X_INSTALL_ID": "install-aaaaaaaa"}

    assert [app_api.get(URL, **install).status_code for _ in range(3)] == [200, 200, 200]
    limited = app_api.get(URL, **install)
    assert limited.status_code == 429 and limited.has_header("Retry-After")
    assert limited.json()["error"]["code"] == "rate_limited"
    # Another install under the same key has its own budget; so has an address without an id.
    assert app_api.get(URL, HTTP_X_INSTALL_ID="install-bbbbbbbb").status_code == 200
    assert app_api.get(URL, HTTP_X_INSTALL_ID="not valid!").status_code == 200  # counted by address


def test_s3_storage_answers_a_302_that_is_not_cached(app_api, published, settings, tmp_path):
    """Without a real server: the redirect itself (the integration test fetches the URL)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "models", "endpoint_url": "http://127.0.0.1:9", "access_key": "k",
                "secret_key": "s", "region_name": "us-east-1", "signature_version": "s3v4",
                "addressing_style": "path", "querystring_auth": True, "querystring_expire": 77,
            },
        },
    }
    response = app_api.get(URL)
    assert response.status_code == 302
    assert "X-Amz-Expires=77" in response["Location"] and "X-Amz-Signature=" in response["Location"]
    assert response["Cache-Control"] == "no-store"
