"""Web pages for accounts (login/logout are Django's own views)."""
from django import forms
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.services import volunteer_create
from common.errors import DomainError


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional; only for the newsletter.")


def signup_page(request: HttpRequest) -> HttpResponse:
    """Create a volunteer account and log it in."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = volunteer_create(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                email=form.cleaned_data.get("email", ""),
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})
