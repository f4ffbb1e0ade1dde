"""URLs of the newsletter app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path

from newsletter.views import unsubscribe_page

api_urlpatterns: list = []
urlpatterns = [
    path("newsletter/unsubscribe/<str:token>/", unsubscribe_page, name="newsletter-unsubscribe"),
]
