"""URLs of the leaderboards app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path  # noqa: F401

api_urlpatterns: list = []
urlpatterns: list = []
