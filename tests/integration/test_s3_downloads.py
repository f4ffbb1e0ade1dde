"""Model and patch downloads on a real S3 server (Ceph RADOS Gateway on loopback).

The API answers 302 to a presigned URL; these tests follow it with real HTTP (requests), so
the object store's own checks are what is tested: exact bytes, ranges, signature, expiry.
"""
import hashlib
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import bsdiff4
import pytest
import requests

from mobile_api.deltas import version_deltas_build
from tests.mobile_api.conftest import app_api, app_key, make_version  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.services, pytest.mark.django_db]

BACKBONE = bytes(range(256)) * 400  # 102400 bytes shared by both versions
URL = "/api/mobile/v1/models/ants-bees/versions/{version}/onnx-fp32"


def model_file(night: int) -> bytes:
    return b"ONNX" + BACKBONE + hashlib.sha256(f"head {night}".encode()).digest() * 64


def presigned(client, url: str) -> str:
    """The presigned URL the API redirects a GET of ``url`` to."""
    response = client.get(url)
    assert response.status_code == 302, response.content
    assert response["Cache-Control"] == "no-store"  # the redirect must not outlive the URL
    return response["Location"]


def test_download_redirects_to_a_presigned_url_with_the_exact_bytes(s3_storage, app_api, project, make_version):
    version = make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    artifact = version.artifacts.get()

    location = presigned(app_api, URL.format(version=1))

    query = dict(parse_qsl(urlsplit(location).query))
    assert query["X-Amz-Expires"] == "60"  # the storage's querystring_expire (AWS_QUERYSTRING_EXPIRE)
    assert "X-Amz-Signature" in query
    whole = requests.get(location, timeout=10)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == artifact.sha256


def test_presigned_url_resumes_with_a_range(s3_storage, app_api, project, make_version):
    version = make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    artifact = version.artifacts.get()
    location = presigned(app_api, URL.format(version=1))
    half = artifact.size // 2
    first = requests.get(location, headers={"Range": f"bytes=0-{half - 1}"}, timeout=10)

    rest = requests.get(location, headers={"Range": f"bytes={half}-"}, timeout=10)

    assert first.status_code == 206 and rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes {half}-{artifact.size - 1}/{artifact.size}"
    assert hashlib.sha256(first.content + rest.content).hexdigest() == artifact.sha256


def test_a_tampered_presigned_url_is_refused(s3_storage, app_api, project, make_version):
    make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    make_version(project, 2, files={("onnx", "fp32"): model_file(2)})
    location = presigned(app_api, URL.format(version=1))
    parts = urlsplit(location)
    query = dict(parse_qsl(parts.query))

    signature = query["X-Amz-Signature"]
    forged = {**query, "X-Amz-Signature": ("0" if signature[0] != "0" else "1") + signature[1:]}
    assert requests.get(urlunsplit(parts._replace(query=urlencode(forged))), timeout=10).status_code == 403
    longer = {**query, "X-Amz-Expires": "604800"}  # stretching the lifetime breaks the signature
    assert requests.get(urlunsplit(parts._replace(query=urlencode(longer))), timeout=10).status_code == 403
    # The signature covers the key: it does not open another version's file.
    other = urlunsplit(parts._replace(path=parts.path.replace("/v1/", "/v2/").replace("-v1-", "-v2-")))
    assert other != location
    assert requests.get(other, timeout=10).status_code == 403


def test_an_expired_presigned_url_is_refused_and_the_api_gives_a_fresh_one(
    s3_storage, settings, app_api, project, make_version
):
    version = make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    default = settings.STORAGES["default"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**default, "OPTIONS": {**default["OPTIONS"], "querystring_expire": 1}},
    }
    location = presigned(app_api, URL.format(version=1))
    assert dict(parse_qsl(urlsplit(location).query))["X-Amz-Expires"] == "1"

    time.sleep(2.5)

    assert requests.get(location, timeout=10).status_code == 403  # replayed after expiry
    fresh = requests.get(presigned(app_api, URL.format(version=1)), timeout=10)
    assert fresh.status_code == 200
    assert hashlib.sha256(fresh.content).hexdigest() == version.artifacts.get().sha256


def test_head_on_s3_gives_size_and_etag_without_a_redirect(s3_storage, app_api, project, make_version):
    version = make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    artifact = version.artifacts.get()

    response = app_api.head(URL.format(version=1))

    assert response.status_code == 200
    assert response["Content-Length"] == str(artifact.size) and response["ETag"] == f'"{artifact.sha256}"'


def test_deltas_are_built_on_s3_and_the_presigned_patch_rebuilds_the_file(s3_storage, app_api, project, make_version):
    v1 = make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    v2 = make_version(project, 2, files={("onnx", "fp32"): model_file(2)})

    [delta] = version_deltas_build(version=v2)
    assert version_deltas_build(version=v2) == []  # idempotent on S3 too

    patch = requests.get(presigned(app_api, URL.format(version=2) + "/from/1"), timeout=10)
    old = requests.get(presigned(app_api, URL.format(version=1)), timeout=10)
    assert patch.status_code == 200 and hashlib.sha256(patch.content).hexdigest() == delta.sha256
    assert len(patch.content) < 0.5 * v2.artifacts.get().size
    rebuilt = bsdiff4.patch(old.content, patch.content)
    assert hashlib.sha256(rebuilt).hexdigest() == v2.artifacts.get().sha256
    assert v1.artifacts.get().sha256 != v2.artifacts.get().sha256


def test_downloads_on_s3_still_need_an_app_key(s3_storage, api, project, make_version):
    make_version(project, 1, files={("onnx", "fp32"): model_file(1)})
    response = api.get(URL.format(version=1))
    assert response.status_code == 401 and "Location" not in response
