from django.urls import path

from mobile_api.views import ModelDownloadApi, ModelLatestApi

urlpatterns = [
    path("models/<slug:name>/latest", ModelLatestApi.as_view(), name="mobile-model-latest"),
    path(
        "models/<slug:name>/versions/<int:version>/<slug:variant>",
        ModelDownloadApi.as_view(),
        name="mobile-model-download",
    ),
]
