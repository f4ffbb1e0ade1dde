"""Database outages answered as 503 with Retry-After on every view, not only the DRF ones;
the Content-Security-Policy and the API's default caching rule on every answer."""
from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from common.errors import DATABASE_ERRORS, database_unavailable, error_body

_PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Back in a moment</title></head>"
    "<body><h1>Back in a moment</h1><p>The site cannot reach its database right now. "
    "Please reload this page in a few seconds.</p></body></html>"
)


class DatabaseUnavailableMiddleware:
    """Turn a view's lost database connection into a 503 the client can retry.

    DRF views already answer through the API exception handler; this covers plain Django
    views: the app-facing JSON endpoints under /api/ get the API's error body, pages a
    static HTML page (no template: its context processors would query the database again).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_ERRORS):
            return None
        error = database_unavailable(exception)
        if request.path.startswith("/api/"):
            response = JsonResponse(
                error_body(error.code, error.message, retry_after=error.retry_after), status=error.status_code
            )
        else:
            response = HttpResponse(_PAGE, status=error.status_code, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(error.retry_after)
        response["Cache-Control"] = "no-store"
        return response


# Scripts only from this origin, never inline (no attribute handlers, no <script> blocks):
# injected markup cannot run. Styles may be inline: Django's admin, Swagger UI and a few of
# our templates use style attributes, and CSS cannot run code. Images may also be data: URIs
# (Swagger UI's icons), blob: URLs (the upload page previews the photos chosen on the device
# before sending them) and, with S3 storage, come from the object store (presigned redirects).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:{images}; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# API answers that set no caching rule of their own: they are a volunteer's data (their
# profile, their photos, the moderation queue), so no browser or proxy keeps them.
API_CACHE_CONTROL = "private, no-store"


def content_security_policy(*, storage_origin: str | None) -> str:
    """The Content-Security-Policy header; ``storage_origin`` is where presigned images live."""
    return _CSP.format(images=f" {storage_origin}" if storage_origin else "")


def _storage_origin() -> str | None:
    """The object store's origin when photos are redirected to presigned S3 URLs, else None."""
    default = settings.STORAGES.get("default", {})
    if "s3" not in default.get("BACKEND", "").lower():
        return None
    endpoint = default.get("OPTIONS", {}).get("endpoint_url")
    if not endpoint:
        return "https://*.amazonaws.com"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class SecurityHeadersMiddleware:
    """Content-Security-Policy on every answer; ``private, no-store`` on API answers without a rule."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = content_security_policy(storage_origin=_storage_origin())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", self.policy)
        if request.path.startswith("/api/") and not response.has_header("Cache-Control"):
            response["Cache-Control"] = API_CACHE_CONTROL
        return response
