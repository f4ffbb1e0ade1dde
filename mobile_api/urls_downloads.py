from django.urls import path

from mobile_api.api_downloads import ModelDeltaDownloadApi, ModelDownloadApi

urlpatterns = [
    path(
        "models/<slug:name>/versions/<int:version>/<slug:variant>",
        ModelDownloadApi.as_view(),
        name="mobile-model-download",
    ),
    path(
        "models/<slug:name>/versions/<int:version>/<slug:variant>/from/<int:from_version>",
        ModelDeltaDownloadApi.as_view(),
        name="mobile-model-delta",
    ),
]
