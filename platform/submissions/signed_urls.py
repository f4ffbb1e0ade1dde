"""Short-lived signed URLs for a photo's display copy and thumbnail, as the API hands them out.

The API authenticates with a token in a header, which an ``<img src>`` or a plain download
cannot send; the copies' views otherwise only know the session cookie. So the URLs in
``GET /api/v1/photos/`` carry their own authority, like S3 presigned URLs: a signature over
the photo and the copy (django.core.signing, keyed with SECRET_KEY), valid for
``PLATFORM_PHOTO_URL_MAX_AGE`` seconds (``AWS_QUERYSTRING_EXPIRE``, default 900). Only someone the API shows the photo to (its volunteer, staff
in the moderation queue) ever receives one. On S3 storage the URL is the object store's own
presigned URL, with the same lifetime.
"""
from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core import signing
from django.core.files.storage import FileSystemStorage, default_storage
from django.urls import reverse

_SALT = "submissions.photo-copy-url"
SIGNATURE_PARAMETER = "sig"
# The copies the API links to, by URL name: (field, name in the signature).
COPIES = {"photo-display": ("display_image", "display"), "photo-thumbnail": ("thumbnail", "thumb")}
# Private copies: never kept by a browser or proxy (a shared computer must not keep a
# deleted photo); the signed URL is re-fetched from the API instead.
PRIVATE_CACHE_CONTROL = "private, no-store"


def photo_copy_url(*, photo, view_name: str, absolute: Callable[[str], str]) -> str | None:
    """A URL that serves the copy to whoever holds it, for a limited time; None without the copy."""
    field, copy = COPIES[view_name]
    name = getattr(photo, field).name
    if not name:
        return None  # rows made before copies existed
    if not isinstance(default_storage, FileSystemStorage):
        return default_storage.url(name, parameters={"ResponseCacheControl": PRIVATE_CACHE_CONTROL})
    signature = signing.TimestampSigner(salt=_SALT).sign(_value(photo.public_id, copy)).split(":", 2)
    path = reverse(view_name, kwargs={"photo_id": photo.public_id})
    return absolute(f"{path}?{SIGNATURE_PARAMETER}={signature[1]}:{signature[2]}")


def photo_copy_signature_valid(*, public_id, copy: str, signature: str) -> bool:
    """Whether ``signature`` (from a URL) grants this copy of this photo now: untampered and unexpired."""
    if len(signature) > 200:
        return False
    try:
        signing.TimestampSigner(salt=_SALT).unsign(f"{_value(public_id, copy)}:{signature}", max_age=settings.PLATFORM_PHOTO_URL_MAX_AGE)
    except signing.BadSignature:  # SignatureExpired is a BadSignature
        return False
    return True


def _value(public_id, copy: str) -> str:
    return f"{public_id}/{copy}"
