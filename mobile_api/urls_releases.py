"""Routes of update checks, manifests, model cards and the staff endpoints that move releases."""
from django.urls import path

from mobile_api import staff_api
from mobile_api.views import ModelCardApi, ModelLatestApi, model_update

_STAFF = "staff/models/<slug:name>/channels/<slug:channel>/"

urlpatterns = [
    path("models/<slug:name>/update", model_update, name="mobile-model-update"),
    path("models/<slug:name>/latest", ModelLatestApi.as_view(), name="mobile-model-latest"),
    # Before the download routes: "card" would otherwise read as a <format>-<variant> slug.
    path("models/<slug:name>/versions/<int:version>/card", ModelCardApi.as_view(), name="mobile-model-card"),
    path(_STAFF + "promote", staff_api.ChannelPromoteApi.as_view(), name="mobile-staff-promote"),
    path(_STAFF + "rollout", staff_api.ChannelRolloutApi.as_view(), name="mobile-staff-rollout"),
    path(_STAFF + "pause", staff_api.ChannelPauseApi.as_view(), name="mobile-staff-pause"),
    path(_STAFF + "resume", staff_api.ChannelResumeApi.as_view(), name="mobile-staff-resume"),
    path(_STAFF + "rollback", staff_api.ChannelRollbackApi.as_view(), name="mobile-staff-rollback"),
    path(_STAFF + "history", staff_api.ChannelHistoryApi.as_view(), name="mobile-staff-history"),
    path(_STAFF + "resolve", staff_api.ChannelResolveApi.as_view(), name="mobile-staff-resolve"),
    path("staff/models/<slug:name>/versions/import", staff_api.ModelVersionImportApi.as_view(),
         name="mobile-staff-version-import"),
]
