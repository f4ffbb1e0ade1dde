"""Which release an install gets: the bucketing function and the resolution rule.

Pure Python (no Django, no database), so the update endpoint, the static manifest, the
history replay and the reference client all use exactly the same rule. Apps, CDNs and
edge workers may re-implement it from this description:

    bucket = int(sha256(f"{salt}:{install_id}").hexdigest()[:8], 16) % 100

``salt`` is the channel's (``"<model>/<channel>"``), so an install keeps its bucket for
every rollout on the channel and across servers. The channel state lists its live releases,
newest first; an install gets the first one that

1. targets it: its platform and one of its accepted formats are allowed (an empty list
   allows all), and ``min_app_version <= app_version <= max_app_version`` (dotted numbers
   compared numerically; an empty bound is open);
2. covers it: ``bucket < rollout_percent``;
3. is active, or is paused and the install already runs it (a pause stops the spread,
   it does not take the model away from installs that have it).

No release matching: the install keeps what it has.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

BUCKETS = 100
# Anchored with \A...\Z (``$`` also matches before a trailing newline) and ASCII-only classes
# (``\d`` matches Arabic-Indic or full-width digits): a value either is exactly what
# PROTOCOL.md describes or is refused, never stripped or read as another id.
INSTALL_ID = re.compile(r"\A[A-Za-z0-9_-]{8,128}\Z", re.ASCII)
APP_VERSION = re.compile(r"\A[0-9]{1,6}(\.[0-9]{1,6}){0,3}\Z", re.ASCII)
# Model and channel names (Django's slug characters).
NAME = re.compile(r"\A[-a-zA-Z0-9_]{1,50}\Z", re.ASCII)


def bucket_of(*, salt: str, install_id: str) -> int:
    """The install's bucket (0..99) on a channel: stable across polls, servers and rollouts."""
    digest = hashlib.sha256(f"{salt}:{install_id}".encode()).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def channel_salt(*, model: str, channel: str) -> str:
    """The bucketing salt of a channel."""
    return f"{model}/{channel}"


def app_version_key(version: str) -> tuple[int, ...]:
    """A dotted app version as a comparable tuple ("2.10" > "2.9"; "2.1" == "2.1.0")."""
    parts = [int(p) for p in version.split(".")]
    while len(parts) < 4:
        parts.append(0)
    return tuple(parts)


@dataclass(frozen=True)
class Install:
    """What an update check tells about the install asking."""

    install_id: str
    app_version: str
    platform: str
    formats: tuple[str, ...]
    current_version: int | None = None


def release_targets(release: dict, install: Install) -> bool:
    """Whether the release's targeting admits the install (rule 1).

    An install field left empty (no platform, no formats, app version "") is not checked:
    the history replay asks "what did bucket 17 get" without naming a device. The update
    endpoint always sends all three.
    """
    platforms = release.get("platforms") or []
    if platforms and install.platform and install.platform not in platforms:
        return False
    formats = release.get("formats") or []
    if formats and install.formats and not set(formats).intersection(install.formats):
        return False
    if install.app_version:
        app = app_version_key(install.app_version)
        low, high = release.get("min_app_version") or "", release.get("max_app_version") or ""
        if low and app < app_version_key(low):
            return False
        if high and app > app_version_key(high):
            return False
    return True


def resolve(state: dict, install: Install) -> dict | None:
    """The release (an entry of ``state["releases"]``) the install gets, or None.

    ``state`` is a channel state as stored in ``ReleaseEvent.state`` and in the static
    manifest: ``{"salt": str, "releases": [{"version", "state", "rollout_percent",
    "platforms", "formats", "min_app_version", "max_app_version", ...}, ...]}``.
    """
    return resolve_bucket(state, bucket=bucket_of(salt=state["salt"], install_id=install.install_id), install=install)


def resolve_bucket(state: dict, *, bucket: int, install: Install) -> dict | None:
    """The release a bucket gets (the rule of ``resolve`` with the bucket given directly).

    The history replay ("which version did bucket 17 get at time T") has a bucket, not an
    install id; ``install.install_id`` is not used here.
    """
    for release in state.get("releases", []):
        if not release_targets(release, install):
            continue
        if bucket >= release["rollout_percent"]:
            continue
        if release["state"] == "active":
            return release
        if release["state"] == "paused" and install.current_version == release["version"]:
            return release
    return None
