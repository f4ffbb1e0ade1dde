"""Volunteer accounts and their public profiles."""
from __future__ import annotations

import re
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from accounts.models import Profile
from common.errors import Conflict, ValidationFailed

User = get_user_model()

DISPLAY_NAME_MIN, DISPLAY_NAME_MAX = 3, 40
# Letters (any script), digits, spaces and a little punctuation; no '@' so that no
# email address (or handle) can be published on a board.
_DISPLAY_NAME_RE = re.compile(r"^[\w .'-]+$")
_EMAIL_LIKE_RE = re.compile(r"@|\b[\w-]+\.(com|org|net|de|fr|uk|io|edu)\b", re.IGNORECASE)


def volunteer_create(*, username: str, password: str, email: str = "", signup_address: str | None = None) -> User:
    """Create a (non-staff) volunteer account with a validated password and its profile.

    ``signup_address`` (the client's address) lets the account widen that address's sign-up
    budget once it shows activity (``accounts.throttles.SignupRateThrottle``).
    """
    candidate = User(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages), code="weak_password") from exc
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password, email=email)
            profile = profile_get_or_create(user=user)
            if signup_address:
                profile.signup_address = signup_address
                profile.save(update_fields=["signup_address", "updated_at"])
            return user
    except IntegrityError as exc:
        raise Conflict(f"The username {username!r} is taken.", code="username_taken") from exc


def token_get_or_create(*, user: User) -> str:
    """The API token of a user (DRF token authentication)."""
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


def profile_get_or_create(*, user: User) -> Profile:
    """The user's profile, created with a generated display name on first use.

    Accounts made outside sign-up (createsuperuser, imports, factories) get one lazily,
    so every volunteer who earns points has a public name that is not their username.
    """
    try:
        return user.profile
    except Profile.DoesNotExist:
        pass
    for _ in range(20):
        name = f"Volunteer {secrets.randbelow(900_000) + 100_000}"
        try:
            with transaction.atomic():
                profile, _created = Profile.objects.get_or_create(user=user, defaults={"display_name": name})
            user.profile = profile
            return profile
        except IntegrityError:
            continue  # the generated name was taken: draw again
    raise Conflict("Could not generate a free display name; retry.", code="display_name_taken")


def display_name_validate(name: str) -> str:
    """Normalise and check a display name; raise ValidationFailed with a reason."""
    name = " ".join(name.split())
    if not DISPLAY_NAME_MIN <= len(name) <= DISPLAY_NAME_MAX:
        raise ValidationFailed(
            f"A display name has {DISPLAY_NAME_MIN} to {DISPLAY_NAME_MAX} characters.",
            code="invalid_display_name", extra={"fields": {"display_name": ["Wrong length."]}},
        )
    if _EMAIL_LIKE_RE.search(name):
        raise ValidationFailed(
            "A display name must not look like an email address or web address: it is public.",
            code="invalid_display_name", extra={"fields": {"display_name": ["Looks like an email address."]}},
        )
    if not _DISPLAY_NAME_RE.match(name):
        raise ValidationFailed(
            "Use letters, digits, spaces, dots, dashes and apostrophes only.",
            code="invalid_display_name", extra={"fields": {"display_name": ["Unsupported characters."]}},
        )
    return name


def profile_update(
    *,
    user: User,
    display_name: str | None = None,
    public_on_leaderboards: bool | None = None,
    newsletter_opt_in: bool | None = None,
) -> Profile:
    """Change the public profile; arguments left as None keep their value."""
    profile = profile_get_or_create(user=user)
    fields = []
    if display_name is not None:
        name = display_name_validate(display_name)
        clash = Profile.objects.filter(display_name__iexact=name).exclude(pk=profile.pk).exists()
        if clash or name.lower() == user.username.lower():
            # The username is private (it logs in); refusing it keeps it off the boards.
            raise Conflict(
                "This display name is taken or is your username; choose another.", code="display_name_taken",
                extra={"fields": {"display_name": ["Not available."]}},
            )
        profile.display_name = name
        fields.append("display_name")
    if public_on_leaderboards is not None:
        profile.public_on_leaderboards = public_on_leaderboards
        fields.append("public_on_leaderboards")
    if newsletter_opt_in is not None:
        profile.newsletter_opt_in = newsletter_opt_in
        fields.append("newsletter_opt_in")
    if fields:
        try:
            with transaction.atomic():
                profile.save(update_fields=[*fields, "updated_at"])
        except IntegrityError as exc:  # a concurrent update took the name
            raise Conflict("This display name is taken.", code="display_name_taken") from exc
    return profile
