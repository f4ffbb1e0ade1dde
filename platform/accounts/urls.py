"""URLs of the accounts app: API under /api/v1/ (api_urlpatterns) and web pages (urlpatterns)."""
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.api import SignupApi, TokenLoginApi
from accounts.views import signup_page

api_urlpatterns = [
    path("auth/signup/", SignupApi.as_view(), name="api-signup"),
    path("auth/token/", TokenLoginApi.as_view(), name="api-token"),
]
urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", signup_page, name="signup"),
]
