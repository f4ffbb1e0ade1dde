"""Distribution in the Django admin: app keys, channels, releases and their history."""
from __future__ import annotations

from mobile_api import admin_telemetry  # noqa: F401  (release health: registered there)
