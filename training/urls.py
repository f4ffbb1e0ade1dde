"""Web pages of the training app (the config URLconf includes `urlpatterns`)."""
from django.urls import path

from training.views import releases_page

api_urlpatterns: list = []
urlpatterns = [
    path("releases/", releases_page, name="releases"),
]
