"""Release health (telemetry aggregates) in the Django admin."""
