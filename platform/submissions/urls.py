"""URLs of the submissions app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path

from submissions.api import ModerationPhotoListApi, PhotoListCreateApi, PhotoModerateApi
from submissions.views import home_page, photo_image, photo_upload_page

api_urlpatterns = [
    path("photos/", PhotoListCreateApi.as_view(), name="api-photos"),
    path("moderation/photos/", ModerationPhotoListApi.as_view(), name="api-moderation-photos"),
    path("moderation/photos/<uuid:photo_id>/decision/", PhotoModerateApi.as_view(), name="api-photo-decision"),
]
urlpatterns = [
    path("", home_page, name="home"),
    path("challenges/<int:challenge_id>/photos/", photo_upload_page, name="photo-upload"),
    path("photos/<uuid:photo_id>/image", photo_image, name="photo-image"),
]
