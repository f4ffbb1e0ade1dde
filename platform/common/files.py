"""Serving stored files: a presigned redirect on S3, byte ranges on local storage.

Every stored file this platform serves is immutable under its name (photos, model files,
patches), so one strong ETag per file is enough for revalidation, for ``If-Range`` and for
caches. Range requests follow RFC 9110, section 14, with these choices (all 4xx, never 5xx):

- a unit other than ``bytes`` (``items=0-5``) is ignored: 200 with the whole file (RFC: MUST);
- several ranges (``bytes=0-1,5-6``) are ignored: 200 with the whole file (RFC: MAY ignore; we
  never build ``multipart/byteranges``, which no model downloader needs);
- one malformed or unsatisfiable byte range (``bytes=abc``, ``bytes=5-2``, ``bytes=-0``, a start
  at or past the end, a header longer than 100 characters) answers 416 with
  ``Content-Range: bytes */<size>`` (RFC: MAY reject), so a broken resume shows up at once;
- an end past the file is clipped (``bytes=0-99999999999999999999`` is the whole file, 206);
- ``If-Range`` with anything but the current strong ETag (a weak tag, a date) ignores the range
  and sends the whole file, which is always safe;
- ``If-None-Match`` (a list, weak tags, ``*``) is evaluated first and answers 304.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.utils import validate_file_name
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse

from common.errors import error_body

# Versioned files never change under their name: private caches (the app's HTTP cache)
# may keep them for good. "private": downloads may need credentials a shared cache lacks.
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
# A presigned URL expires; a cached redirect to it would outlive it.
REDIRECT_CACHE_CONTROL = "no-store"

# ASCII digits only: int() would also read Arabic-Indic or full-width ones.
_BYTES_RANGE = re.compile(r"\A([0-9]*)-([0-9]*)\Z", re.ASCII)
_MAX_RANGE_HEADER = 100  # also keeps int() far from Python's 4300-digit conversion limit
_CHUNK = 64 * 1024


class _Unsatisfiable(Exception):
    """The Range header asks for bytes the file cannot give (answered 416)."""


def stored_file_response(
    request: HttpRequest, *, name: str, etag: str, content_type: str, download_name: str | None = None,
    cache_control: str = IMMUTABLE_CACHE_CONTROL,
) -> HttpResponse:
    """Answer a GET or HEAD for a stored object whose content ``etag`` identifies.

    On S3 a GET is redirected (302) to a presigned URL that expires after the storage's
    ``querystring_expire`` (``AWS_QUERYSTRING_EXPIRE``) seconds; the object store answers
    ranges itself and refuses altered or expired URLs. On local storage the file is streamed
    from here, with a single byte range (206) so interrupted downloads resume. HEAD answers
    the headers of a full GET (size from storage) on both, without a body or a redirect. A
    name missing from storage is a 404, and so is a name that would leave the storage root
    (``..``, an absolute path, a NUL byte): names come from the database, never from the URL,
    so such a name is a damaged row, and refusing it here keeps it from becoming a 500 (or,
    on S3, a presigned URL for another key). ``cache_control`` is sent with the file (on S3:
    asked of the object store through the presigned URL); the default suits versioned files.
    """
    _check_name(name)
    quoted = f'"{etag}"'
    if _etag_listed(request.headers.get("If-None-Match"), quoted):
        return _with_headers(HttpResponse(status=304), etag=quoted, cache_control=cache_control)

    is_local = isinstance(default_storage, FileSystemStorage)
    if request.method != "HEAD" and not is_local:
        if cache_control == IMMUTABLE_CACHE_CONTROL:
            url = default_storage.url(name)
        else:  # the object store sends the file: ask it for the same caching rule
            url = default_storage.url(name, parameters={"ResponseCacheControl": cache_control})
        redirect = HttpResponseRedirect(url)
        redirect["Cache-Control"] = REDIRECT_CACHE_CONTROL
        return redirect

    try:
        size = default_storage.size(name)
    except Exception as exc:
        if _is_missing(exc):
            raise Http404("The stored file is missing.") from exc
        raise

    start, end, status = 0, size - 1, 200
    wanted = request.headers.get("Range")
    if wanted and _if_range_holds(request.headers.get("If-Range"), quoted):
        try:
            parsed = _parse_range(wanted, size)
        except _Unsatisfiable as exc:
            response = JsonResponse(error_body("range_not_satisfiable", str(exc)), status=416)
            response["Content-Range"] = f"bytes */{size}"
            _with_headers(response, etag=quoted, cache_control="no-store")  # a refusal: never cache it
            return response
        if parsed is not None:
            start, end = parsed
            status = 206

    length = max(0, end - start + 1)
    if request.method == "HEAD":
        response = HttpResponse(status=status, content_type=content_type)
    else:
        try:
            fh = open(default_storage.path(name), "rb")
        except FileNotFoundError as exc:  # deleted since size() above
            raise Http404("The stored file is missing.") from exc
        fh.seek(start)
        response = StreamingHttpResponse(_limited(fh, length), status=status, content_type=content_type)
    if download_name:
        response["Content-Disposition"] = f'attachment; filename="{download_name}"'
    response["Content-Length"] = str(length)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return _with_headers(response, etag=quoted, cache_control=cache_control)


def _check_name(name: str) -> None:
    try:
        validate_file_name(name, allow_relative_path=True)
    except SuspiciousFileOperation as exc:
        raise Http404("No such stored file.") from exc
    if "\x00" in name:  # the OS would refuse it with a ValueError (a 500)
        raise Http404("No such stored file.")


def _with_headers(response: HttpResponse, *, etag: str, cache_control: str) -> HttpResponse:
    response["ETag"] = etag
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = cache_control
    return response


def _is_missing(exc: Exception) -> bool:
    """A missing object: FileNotFoundError locally, a 404 ClientError from S3 (botocore)."""
    if isinstance(exc, FileNotFoundError):
        return True
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _etag_listed(header: str | None, quoted: str) -> bool:
    """If-None-Match: weak comparison against a list of tags, or ``*``."""
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == quoted:
            return True
    return False


def _if_range_holds(header: str | None, quoted: str) -> bool:
    """Whether to honour Range: no If-Range, or If-Range naming the current strong ETag."""
    return header is None or header.strip() == quoted


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range to send, clipped to the file; None to ignore the header.

    Raises _Unsatisfiable (416) for a malformed or unsatisfiable single byte range.
    """
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None  # a unit we do not serve: RFC 9110 says ignore it
    if "," in spec:
        return None  # several ranges: allowed to ignore, and the whole file is a correct answer
    if len(header) > _MAX_RANGE_HEADER:
        raise _Unsatisfiable("The Range header is too long.")
    match = _BYTES_RANGE.match(spec.strip())
    if match is None:
        raise _Unsatisfiable(f"Malformed Range {header[:40]!r}; send e.g. 'bytes=1024-'.")
    first, last = match.groups()
    if first == "" and last == "":
        raise _Unsatisfiable("A byte range needs a start or a suffix length.")
    if first == "":  # a suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _Unsatisfiable("An empty suffix range.")
        return max(0, size - length), size - 1
    start = int(first)
    if last and int(last) < start:
        raise _Unsatisfiable("The range ends before it starts.")
    if start >= size:
        raise _Unsatisfiable(f"The range starts at or past the end of the file ({size} bytes).")
    end = min(int(last), size - 1) if last else size - 1
    return start, end


def _limited(fh: BinaryIO, remaining: int) -> Iterator[bytes]:
    """Stream ``remaining`` bytes from ``fh`` in chunks, closing it at the end."""
    with fh:
        while remaining > 0:
            data = fh.read(min(_CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data
