"""URLs of the submissions app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.urls import path

from submissions.api import ModerationPhotoListApi, PhotoDetailApi, PhotoListCreateApi, PhotoModerateApi
from submissions.api_moderation import PhotoFeatureApi, PhotoRelabelApi
from submissions.views import home_page, photo_display, photo_image, photo_thumbnail, photo_upload_page
from submissions.views_gallery import gallery_page, my_photos_page

api_urlpatterns = [
    path("photos/", PhotoListCreateApi.as_view(), name="api-photos"),
    path("photos/<uuid:photo_id>/", PhotoDetailApi.as_view(), name="api-photo"),
    path("moderation/photos/", ModerationPhotoListApi.as_view(), name="api-moderation-photos"),
    path("moderation/photos/<uuid:photo_id>/decision/", PhotoModerateApi.as_view(), name="api-photo-decision"),
    path("moderation/photos/<uuid:photo_id>/relabel/", PhotoRelabelApi.as_view(), name="api-photo-relabel"),
    path("moderation/photos/<uuid:photo_id>/feature/", PhotoFeatureApi.as_view(), name="api-photo-feature"),
]
urlpatterns = [
    path("", home_page, name="home"),
    path("challenges/<int:challenge_id>/photos/", photo_upload_page, name="photo-upload"),
    path("photos/<uuid:photo_id>/image", photo_image, name="photo-image"),
    path("photos/<uuid:photo_id>/display", photo_display, name="photo-display"),
    path("photos/<uuid:photo_id>/thumbnail", photo_thumbnail, name="photo-thumbnail"),
    path("me/photos/", my_photos_page, name="my-photos"),
    path("gallery/", gallery_page, name="gallery"),
]
