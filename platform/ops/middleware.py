"""Request ids and one access line per request (gunicorn's own access log is off)."""
from __future__ import annotations

import logging
import re
import time
import uuid

from ops.logs import request_id_var

access_logger = logging.getLogger("ops.access")
# nginx sends $request_id (32 hex digits); other proxies send UUIDs. Anything else is replaced,
# so a client cannot push arbitrary text into every log line of its request.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")


class RequestIdMiddleware:
    """Tags the request with an id: the proxy's X-Request-ID when sane, else a new one.

    The id goes into every log record of the request (ops.logs.ContextFilter) and back to
    the client in the X-Request-ID response header, so a user's report finds its log lines.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            path = _loggable_path(request)
            access_logger.info(
                "%s %s %s", request.method, path, response.status_code,
                extra={
                    "method": request.method,
                    "path": path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return response
        finally:
            request_id_var.reset(token)


def _loggable_path(request) -> str:
    """The path without its query string, a token in the path (unsubscribe links) masked."""
    path = request.path
    match = getattr(request, "resolver_match", None)
    if match is not None and match.kwargs.get("token"):
        path = path.replace(str(match.kwargs["token"]), "<token>")
    return path
