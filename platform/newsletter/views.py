"""The unsubscribe page: works without logging in; the signed token in the link is the key."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from common.errors import NotFound
from newsletter.services import newsletter_unsubscribe


# CSRF-exempt on purpose: RFC 8058 one-click unsubscribe is a POST from the mail client,
# which has no CSRF token. The signed token authorises only "stop emailing this user".
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe_page(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a confirm button (link scanners must not unsubscribe anyone); POST unsubscribes."""
    if request.method == "GET":
        return render(request, "newsletter/unsubscribe.html", {"token": token, "done": False})
    try:
        newsletter_unsubscribe(token=token)
    except NotFound:
        return render(request, "newsletter/unsubscribe.html", {"invalid": True}, status=404)
    return render(request, "newsletter/unsubscribe.html", {"done": True})
