"""What apps send back (telemetry, misprediction feedback), and the staff view of release health."""
from django.urls import path

from mobile_api.api_feedback import FeedbackCreateApi
from mobile_api.api_telemetry import ChannelTelemetryApi, TelemetryReportApi

urlpatterns = [
    path("models/<slug:name>/telemetry", TelemetryReportApi.as_view(), name="mobile-telemetry"),
    path("models/<slug:name>/feedback", FeedbackCreateApi.as_view(), name="mobile-feedback"),
    path(
        "staff/models/<slug:name>/channels/<slug:channel>/telemetry",
        ChannelTelemetryApi.as_view(),
        name="mobile-staff-telemetry",
    ),
]
