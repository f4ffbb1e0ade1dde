"""Routes of update checks, manifests, model cards and the staff endpoints that move releases."""
from django.urls import path

from mobile_api import api_staff
from mobile_api.api import ModelCardApi, ModelLatestApi, model_update

_STAFF = "staff/models/<slug:name>/channels/<slug:channel>/"

urlpatterns = [
    path("models/<slug:name>/update", model_update, name="mobile-model-update"),
    path("models/<slug:name>/latest", ModelLatestApi.as_view(), name="mobile-model-latest"),
    # Before the download routes: "card" would otherwise read as a <format>-<variant> slug.
    path("models/<slug:name>/versions/<int:version>/card", ModelCardApi.as_view(), name="mobile-model-card"),
    path(_STAFF + "promote", api_staff.ChannelPromoteApi.as_view(), name="mobile-staff-promote"),
    path(_STAFF + "rollout", api_staff.ChannelRolloutApi.as_view(), name="mobile-staff-rollout"),
    path(_STAFF + "pause", api_staff.ChannelPauseApi.as_view(), name="mobile-staff-pause"),
    path(_STAFF + "resume", api_staff.ChannelResumeApi.as_view(), name="mobile-staff-resume"),
    path(_STAFF + "rollback", api_staff.ChannelRollbackApi.as_view(), name="mobile-staff-rollback"),
    path(_STAFF + "history", api_staff.ChannelHistoryApi.as_view(), name="mobile-staff-history"),
    path(_STAFF + "resolve", api_staff.ChannelResolveApi.as_view(), name="mobile-staff-resolve"),
    path("staff/models/<slug:name>/versions/import", api_staff.ModelVersionImportApi.as_view(),
         name="mobile-staff-version-import"),
]
