"""URLs of the challenges app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path

from challenges.api import ChallengeTodayApi, ProjectListApi
from challenges.views import label_example_photo

api_urlpatterns = [
    path("projects/", ProjectListApi.as_view(), name="api-projects"),
    path("challenges/today/", ChallengeTodayApi.as_view(), name="api-challenge-today"),
]
urlpatterns = [
    path("labels/<int:label_id>/example", label_example_photo, name="label-example-photo"),
]
