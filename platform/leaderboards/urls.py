"""URLs of the leaderboards app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path

from leaderboards.api import LeaderboardApi, VolunteerImpactApi
from leaderboards.views import impact_page, leaderboard_page

api_urlpatterns = [
    path("projects/<slug:slug>/leaderboards/<str:period>/", LeaderboardApi.as_view(), name="api-leaderboard"),
    path("me/impact/", VolunteerImpactApi.as_view(), name="api-me-impact"),
]
urlpatterns = [
    path("leaderboards/", leaderboard_page, name="leaderboards"),
    path("me/impact/", impact_page, name="my-impact"),
]
