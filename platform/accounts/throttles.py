"""Limits on the account endpoints: per-address rates (DRF throttles) and the lockout page.

The API views use the throttles as DRF does; the pages (sign-up, login) count with the same
throttle classes, so a client shares one budget whether it posts the form or the API. The
client's address is DRF's (``NUM_PROXIES`` = ``PLATFORM_PROXY_COUNT``), and django-axes uses
the same one for its per-username-and-address lockout.
"""
from __future__ import annotations

import math

from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from accounts.selectors import signup_active_count


class _AddressRateThrottle(SimpleRateThrottle):
    """Counts per client address, at the rate in the setting ``rate_setting`` (read per request)."""

    rate_setting: str

    def get_rate(self) -> str:
        return getattr(settings, self.rate_setting)

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginRateThrottle(_AddressRateThrottle):
    scope = "login"
    rate_setting = "PLATFORM_LOGIN_RATE"


class SignupRateThrottle(_AddressRateThrottle):
    """PLATFORM_SIGNUP_RATE per address, widened by the address's accounts that became active.

    A school or an office signs up behind one address: the base budget lets the first ones
    in, and every account from that address that went on to send a photo adds
    PLATFORM_SIGNUP_BONUS_PER_ACTIVE more per period (up to PLATFORM_SIGNUP_BONUS_MAX). A
    script that makes empty accounts gains nothing. The database is asked only once the base
    budget is spent.
    """

    scope = "signup"
    rate_setting = "PLATFORM_SIGNUP_RATE"

    def allow_request(self, request, view) -> bool:
        if self.rate is not None and len(self.cache.get(self.get_cache_key(request, view), [])) >= self.num_requests:
            self.num_requests += signup_bonus(address=self.get_ident(request))
        return super().allow_request(request, view)


def signup_bonus(*, address: str) -> int:
    """Extra sign-ups per period for an address, earned by its accounts that became active."""
    active = signup_active_count(address=address)
    return min(active * settings.PLATFORM_SIGNUP_BONUS_PER_ACTIVE, settings.PLATFORM_SIGNUP_BONUS_MAX)


def signup_refusal_message(wait_seconds: float | None) -> str:
    """Plain words for a refused sign-up: why, and when to try again."""
    minutes = max(1, math.ceil((wait_seconds or 60) / 60))
    return (
        "Too many attempts from your network: many accounts were made from this address in the "
        f"last hour (a school or an office shares one). Please try again in about {minutes} "
        f"minute{'s' if minutes != 1 else ''}; the more of your network's accounts send photos, "
        "the more new accounts it can make."
    )


def client_address(request: HttpRequest) -> str:
    """The client's address as the throttles see it (django-axes' AXES_CLIENT_IP_CALLABLE)."""
    return BaseThrottle().get_ident(request)


def page_throttled(request: HttpRequest, throttle_class: type[_AddressRateThrottle]) -> HttpResponse | None:
    """For a page's POST: None while the address has budget left, else the 429 page."""
    throttle = throttle_class()
    if throttle.allow_request(request, None):
        return None
    wait = math.ceil(throttle.wait() or 1)
    return _too_many(request, "Too many attempts from your network. Please wait and try again.", wait)


def lockout_page(request: HttpRequest, response: HttpResponse | None = None, credentials: dict | None = None):
    """django-axes' AXES_LOCKOUT_CALLABLE: the login pages' answer to a locked-out username."""
    return _too_many(
        request,
        "Too many failed logins for this account from your network. Please wait and try again, "
        "or reset your password with an admin.",
        lockout_seconds(request),
    )


def lockout_seconds(request) -> int:
    """How long a lockout lasts (each attempt during a lockout starts it again)."""
    return math.ceil(get_cool_off(request).total_seconds())


def _too_many(request: HttpRequest, message: str, retry_after: int) -> HttpResponse:
    response = render(
        request,
        "too_many_requests.html",
        {"message": message, "minutes": math.ceil(retry_after / 60)},
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response
