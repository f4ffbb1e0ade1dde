"""Photos and models on a real S3 server (Ceph RADOS Gateway on loopback) through boto3."""
import hashlib
import io
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import botocore.exceptions
import pytest
import requests
from django.core.files.base import ContentFile

from submissions.models import Photo
from tests.conftest import jpeg_bytes

pytestmark = [pytest.mark.services, pytest.mark.django_db]


def test_uploaded_photo_is_stored_in_the_bucket(s3_storage, services, s3_prefix, volunteer_api, challenge):
    upload = io.BytesIO(jpeg_bytes(size=(80, 60)))
    upload.name = "p.jpg"
    response = volunteer_api.post(
        "/api/v1/photos/", {"challenge": challenge.pk, "label": "bees", "image": upload}, format="multipart"
    )
    assert response.status_code == 201, response.content
    photo = Photo.objects.get()

    stored = services.boto3_client().get_object(Bucket=services.s3_bucket, Key=f"{s3_prefix}/{photo.image.name}")
    body = stored["Body"].read()
    # The training copy: a JPEG, or a PNG for a small or lossless source (platform/common/images.py).
    magic = b"\x89PNG" if photo.image.name.endswith(".png") else b"\xff\xd8"
    assert hashlib.sha256(body).hexdigest() == photo.sha256 and body.startswith(magic)


def test_photo_urls_from_the_api_are_presigned_private_and_expire_with_the_storage(s3_storage, volunteer_api, challenge):
    """On S3 the API's display and thumbnail URLs are the object store's presigned URLs."""
    upload = io.BytesIO(jpeg_bytes(size=(80, 60)))
    upload.name = "p.jpg"
    sent = volunteer_api.post(
        "/api/v1/photos/", {"challenge": challenge.pk, "label": "bees", "image": upload}, format="multipart"
    ).json()
    for key in ("display_url", "thumbnail_url"):
        url = sent[key]
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
        fetched = requests.get(url, timeout=10)  # no session, no token: the signature is the authority
        assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"
        assert fetched.headers["Cache-Control"] == "private, no-store"
        parts = urlsplit(url)
        query = [(k, v[::-1] if k == "X-Amz-Signature" else v) for k, v in parse_qsl(parts.query)]
        assert requests.get(urlunsplit(parts._replace(query=urlencode(query))), timeout=10).status_code == 403


def test_model_file_presigned_download_works_and_tampering_is_refused(s3_storage):
    payload = bytes(range(256)) * 100
    name = s3_storage.save("models/demo/v1/model.onnx", ContentFile(payload))
    assert s3_storage.open(name).read() == payload

    url = s3_storage.url(name)
    assert "X-Amz-Signature=" in url
    ok = requests.get(url, timeout=10)
    assert ok.status_code == 200 and ok.content == payload
    ranged = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == payload[100:200]

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["X-Amz-Signature"] = ("0" if query["X-Amz-Signature"][0] != "0" else "1") + query["X-Amz-Signature"][1:]
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    assert requests.get(tampered, timeout=10).status_code == 403
    other_object = url.replace("model.onnx", "other.onnx")
    assert requests.get(other_object, timeout=10).status_code in (403, 404)


def test_expired_presigned_url_is_refused(s3_storage, services, s3_prefix):
    name = s3_storage.save("models/demo/v1/expiring.onnx", ContentFile(b"soon gone"))
    url = services.boto3_client().generate_presigned_url(
        "get_object", Params={"Bucket": services.s3_bucket, "Key": f"{s3_prefix}/{name}"}, ExpiresIn=1
    )
    assert requests.get(url, timeout=10).status_code == 200
    time.sleep(2.5)
    assert requests.get(url, timeout=10).status_code == 403


def test_wrong_secret_key_is_refused(services):
    client = services.boto3_client(secret_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.list_objects_v2(Bucket=services.s3_bucket, MaxKeys=1)
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
