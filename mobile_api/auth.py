"""App keys and per-key rate limits for the app endpoints, cheap enough for every poll.

A key is ``mk_<prefix>_<secret>``; only its sha256 is stored. Lookups go through a small
in-process memo (``PLATFORM_UPDATE_LOCAL_TTL`` seconds) over Django's cache, so a poll costs
no database query; creating or revoking a key clears the shared cache entry, and every
process sees the change within the memo's lifetime.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework import status

from common.errors import DomainError, TooManyRequests

HEADER = "X-App-Key"
_CACHE_PREFIX = "appkey:"
_MISSING = "-"  # cached "no such active key", so floods of bad keys do not reach the database


class AppKeyInvalid(DomainError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "app_key_invalid"


@dataclass(frozen=True)
class AppIdentity:
    """The app behind a request (what the endpoints need, without a database row)."""

    key_id: int
    name: str
    rate_limit_per_minute: int


def key_generate() -> tuple[str, str, str]:
    """A new key: (the key to show once, its prefix, its sha256)."""
    prefix = secrets.token_hex(4)
    key = f"mk_{prefix}_{secrets.token_urlsafe(24)}"
    return key, prefix, key_sha256(key)


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_memo: dict[str, tuple[float, AppIdentity | None]] = {}


def app_identity_from_request(request: HttpRequest) -> AppIdentity:
    """The app that sent the request, or AppKeyInvalid (401) for a missing, unknown or revoked key."""
    # META, not request.headers: building the headers mapping costs more than the rest of this.
    key = request.META.get("HTTP_X_APP_KEY", "")
    if not key or len(key) > 200:
        raise AppKeyInvalid(f"Send a valid app key in the {HEADER} header.")
    digest = key_sha256(key)
    now = time.monotonic()
    hit = _memo.get(digest)
    if hit is not None and hit[0] > now:
        identity = hit[1]
    else:
        identity = _identity_lookup(digest)
        if len(_memo) > 10_000:  # bounded: a flood of random keys cannot grow it without end
            _memo.clear()
        _memo[digest] = (now + settings.PLATFORM_UPDATE_LOCAL_TTL, identity)
    if identity is None:
        raise AppKeyInvalid("Unknown or revoked app key.")
    return identity


def _identity_lookup(digest: str) -> AppIdentity | None:
    cached = cache.get(_CACHE_PREFIX + digest)
    if cached == _MISSING:
        return None
    if cached is not None:
        return AppIdentity(*cached)
    from mobile_api.models import AppKey

    row = AppKey.objects.filter(key_sha256=digest, revoked_at__isnull=True).only(
        "id", "name", "rate_limit_per_minute"
    ).first()
    if row is None:
        cache.set(_CACHE_PREFIX + digest, _MISSING, 60)
        return None
    identity = AppIdentity(row.id, row.name, row.rate_limit_per_minute)
    cache.set(_CACHE_PREFIX + digest, (identity.key_id, identity.name, identity.rate_limit_per_minute), 3600)
    return identity


def app_key_forget(key_sha256_hex: str) -> None:
    """Drop a key from the caches (after it was created or revoked)."""
    cache.delete(_CACHE_PREFIX + key_sha256_hex)
    _memo.pop(key_sha256_hex, None)


def rate_limit_check(identity: AppIdentity, *, install_id: str, scope: str, shared: bool = True) -> None:
    """Count one request of an install under a key; TooManyRequests (429) above the key's limit.

    A fixed one-minute window. ``shared`` counts in Django's cache (one count for every
    process when the cache is Redis); update checks pass ``shared=False`` and count in this
    process's memory instead: a poll must not pay two cache round trips, and a flood from
    one install still hits the limit in every worker it reaches (each worker allows the
    limit, so the whole service allows at most workers x limit). ``scope`` separates
    endpoints ("update", "download", "telemetry", "feedback").
    """
    limit = identity.rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = int(now // 60)
    if shared:
        count = _shared_count(f"rl:{scope}:{identity.key_id}:{install_id}:{window}")
    else:
        count = _local_count((scope, identity.key_id, install_id), window)
    if count > limit:
        raise TooManyRequests(
            f"More than {limit} requests a minute from this install; slow down.",
            code="rate_limited",
            retry_after=60 - int(now) % 60,
        )


def _shared_count(counter: str) -> int:
    if cache.add(counter, 1, 61):
        return 1
    try:
        return cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.add(counter, 1, 61)
        return 1


_local_counts: dict[tuple, list[int]] = {}  # (scope, key id, install id) -> [window, count]


def _local_count(counter: tuple, window: int) -> int:
    entry = _local_counts.get(counter)
    if entry is None or entry[0] != window:
        if len(_local_counts) > 100_000:  # bounded: old windows and one-off installs go
            _local_counts.clear()
        entry = _local_counts[counter] = [window, 0]
    entry[1] += 1
    return entry[1]


def rate_limit_forget() -> None:
    """Forget the in-process counts (tests)."""
    _local_counts.clear()


def app_memo_clear() -> None:
    """Forget the in-process key lookups (tests)."""
    _memo.clear()
