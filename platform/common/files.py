"""Serving stored files: a presigned redirect on S3, byte ranges on local storage."""
from __future__ import annotations

import re

from django.core.files.storage import FileSystemStorage, default_storage
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def stored_file_response(
    request: HttpRequest, *, name: str, etag: str, content_type: str, download_name: str | None = None
) -> HttpResponse:
    """Answer a GET for a stored object.

    On S3 the client is redirected to a presigned, expiring URL (the object store does
    the heavy lifting, ranges included). On local storage the file is streamed here, with
    a single byte range (206) so interrupted downloads resume.
    """
    if not isinstance(default_storage, FileSystemStorage):
        return HttpResponseRedirect(default_storage.url(name))

    path = default_storage.path(name)
    size = default_storage.size(name)
    quoted = f'"{etag}"'
    if request.headers.get("If-None-Match") == quoted:
        response = HttpResponse(status=304)
        response["ETag"] = quoted
        return response

    start, end = 0, size - 1
    status = 200
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if wanted and (if_range is None or if_range == quoted):
        parsed = _parse_range(wanted, size)
        if parsed is None:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        start, end = parsed
        status = 206

    fh = open(path, "rb")
    fh.seek(start)
    response = StreamingHttpResponse(_limited(fh, end - start + 1), status=status, content_type=content_type)
    if download_name:
        response["Content-Disposition"] = f'attachment; filename="{download_name}"'
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = quoted
    # Versioned files never change: caches may keep them for good.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` range clipped to the file, or None when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if not match or size == 0:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _limited(fh, remaining: int, chunk: int = 64 * 1024):
    with fh:
        while remaining > 0:
            data = fh.read(min(chunk, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data
