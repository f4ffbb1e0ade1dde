"""/api/mobile/v1/: each part of the protocol (mobile_api/PROTOCOL.md) keeps its own routes."""
from django.urls import include, path

urlpatterns = [
    # Update checks, manifests, model cards and the staff endpoints that move releases.
    path("", include("mobile_api.urls_releases")),
    # Model files and binary patches (byte ranges, presigned S3 redirects).
    path("", include("mobile_api.urls_downloads")),
    # What apps send back: telemetry and misprediction feedback.
    path("", include("mobile_api.urls_feedback")),
]
