"""URLs of the challenges app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path

from challenges.api import ChallengeTodayApi, ProjectListApi

api_urlpatterns = [
    path("projects/", ProjectListApi.as_view(), name="api-projects"),
    path("challenges/today/", ChallengeTodayApi.as_view(), name="api-challenge-today"),
]
urlpatterns: list = []
