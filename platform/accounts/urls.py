"""URLs of the accounts app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.api import MeApi, SignupApi, TokenLoginApi
from accounts.views import ThrottledLoginView, profile_page, signup_page

api_urlpatterns = [
    path("auth/signup/", SignupApi.as_view(), name="api-signup"),
    path("auth/token/", TokenLoginApi.as_view(), name="api-token"),
    path("me/", MeApi.as_view(), name="api-me"),
]
urlpatterns = [
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", signup_page, name="signup"),
    path("me/", profile_page, name="profile"),
]
