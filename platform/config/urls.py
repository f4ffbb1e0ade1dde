"""URLconf. Loading it must not import torch (a guard test checks)."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.api import SignupApi, TokenLoginApi
from accounts.views import signup_page
from challenges.api import ChallengeTodayApi, ProjectListApi
from submissions.api import ModerationPhotoListApi, PhotoListCreateApi, PhotoModerateApi
from submissions.views import home_page, photo_image, photo_upload_page

api_v1 = [
    path("auth/signup/", SignupApi.as_view(), name="api-signup"),
    path("auth/token/", TokenLoginApi.as_view(), name="api-token"),
    path("projects/", ProjectListApi.as_view(), name="api-projects"),
    path("challenges/today/", ChallengeTodayApi.as_view(), name="api-challenge-today"),
    path("photos/", PhotoListCreateApi.as_view(), name="api-photos"),
    path("moderation/photos/", ModerationPhotoListApi.as_view(), name="api-moderation-photos"),
    path("moderation/photos/<uuid:photo_id>/decision/", PhotoModerateApi.as_view(), name="api-photo-decision"),
]

urlpatterns = [
    path("", home_page, name="home"),
    path("challenges/<int:challenge_id>/photos/", photo_upload_page, name="photo-upload"),
    path("photos/<uuid:photo_id>/image", photo_image, name="photo-image"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", signup_page, name="signup"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/mobile/v1/", include("mobile_api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
