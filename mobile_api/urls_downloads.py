from django.urls import path

from mobile_api.downloads import ModelDownloadApi

urlpatterns = [
    path(
        "models/<slug:name>/versions/<int:version>/<slug:variant>",
        ModelDownloadApi.as_view(),
        name="mobile-model-download",
    ),
]
