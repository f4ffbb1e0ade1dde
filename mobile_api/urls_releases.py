from django.urls import path

from mobile_api.views import ModelCardApi, ModelLatestApi

urlpatterns = [
    path("models/<slug:name>/latest", ModelLatestApi.as_view(), name="mobile-model-latest"),
    # Before the download routes: "card" would otherwise read as a <format>-<variant> slug.
    path("models/<slug:name>/versions/<int:version>/card", ModelCardApi.as_view(), name="mobile-model-card"),
]
