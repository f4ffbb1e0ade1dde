"""Web routes of the challenges app: a label's example photo (public, it shows what to send)."""
from __future__ import annotations

import hashlib

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from challenges.models import Label
from common.files import stored_file_response


def label_example_photo(request: HttpRequest, label_id: int) -> HttpResponse:
    """The example photo admins chose for a label of an active project."""
    label = get_object_or_404(Label, pk=label_id, project__is_active=True)
    if not label.example_photo:
        raise Http404("This label has no example photo.")
    name = label.example_photo.name
    # The stored name changes whenever admins upload a new example: a stable, cheap ETag.
    etag = hashlib.sha256(name.encode()).hexdigest()
    return stored_file_response(request, name=name, etag=etag, content_type=_content_type(name))


def _content_type(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower()
    return {"png": "image/png", "webp": "image/webp", "gif": "image/gif"}.get(suffix, "image/jpeg")
