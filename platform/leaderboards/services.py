"""Writes for points and leaderboards."""
from __future__ import annotations


def score_photo_moderated(*, photo, previous_status: str) -> None:
    """Keep the running point totals right after a photo's moderation state changed.

    Called by submissions.services.photo_moderate inside its transaction.
    """
