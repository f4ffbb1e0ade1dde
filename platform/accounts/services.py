"""Volunteer accounts."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from common.errors import Conflict, ValidationFailed

User = get_user_model()


def volunteer_create(*, username: str, password: str, email: str = "") -> User:
    """Create a (non-staff) volunteer account with a validated password."""
    candidate = User(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages), code="weak_password") from exc
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError as exc:
        raise Conflict(f"The username {username!r} is taken.", code="username_taken") from exc


def token_get_or_create(*, user: User) -> str:
    """The API token of a user (DRF token authentication)."""
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
