"""Web pages for accounts (login/logout are Django's own views) and the profile settings."""
from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.services import profile_get_or_create, profile_update, volunteer_create
from accounts.throttles import (
    LoginRateThrottle,
    SignupRateThrottle,
    client_address,
    page_throttled,
    signup_refusal_message,
)
from common.errors import DomainError


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional; only for the newsletter.")


def signup_page(request: HttpRequest) -> HttpResponse:
    """Create a volunteer account and log it in.

    A refusal for the address's budget keeps what was typed (except the passwords) and says
    when to try again, with a 429 and Retry-After.
    """
    if request.method == "POST" and (refusal := page_throttled(request, SignupRateThrottle)):
        kept = {key: request.POST.get(key, "") for key in ("username", "email")}
        response = render(
            request,
            "accounts/signup.html",
            {"form": SignupForm(initial=kept), "refusal": signup_refusal_message(int(refusal["Retry-After"]))},
            status=429,
        )
        response["Retry-After"] = refusal["Retry-After"]
        return response
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = volunteer_create(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                email=form.cleaned_data.get("email", ""),
                signup_address=client_address(request),
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


class ThrottledLoginView(LoginView):
    """Django's login page, with the token API's per-address budget on its POSTs."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        return page_throttled(request, LoginRateThrottle) or super().post(request, *args, **kwargs)


class ProfileForm(forms.Form):
    display_name = forms.CharField(
        max_length=40, min_length=3, help_text="Shown on leaderboards instead of your username. No email addresses."
    )
    public_on_leaderboards = forms.BooleanField(required=False, label="Show me on leaderboards")
    newsletter_opt_in = forms.BooleanField(required=False, label="Send me the newsletter")


@login_required
def profile_page(request: HttpRequest) -> HttpResponse:
    """Edit the public display name and preferences (same rules as PATCH /api/v1/me/)."""
    profile = profile_get_or_create(user=request.user)
    initial = {
        "display_name": profile.display_name,
        "public_on_leaderboards": profile.public_on_leaderboards,
        "newsletter_opt_in": profile.newsletter_opt_in,
    }
    form = ProfileForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            profile_update(user=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error("display_name" if "display_name" in exc.code else None, exc.message)
        else:
            messages.success(request, "Profile saved.")
            return redirect("profile")
    return render(request, "accounts/profile.html", {"form": form, "profile": profile})
