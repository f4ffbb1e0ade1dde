"""Sign-up, token login and the volunteer's own profile (/me/) for the REST API."""
from django.contrib.auth import authenticate, user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.services import profile_get_or_create, profile_update, token_get_or_create, volunteer_create
from accounts.throttles import (
    LoginRateThrottle,
    SignupRateThrottle,
    client_address,
    lockout_seconds,
    signup_refusal_message,
)
from common.errors import DomainError, TooManyRequests
from common.fields import StrictInput


class TokenOutput(serializers.Serializer):
    username = serializers.CharField()
    token = serializers.CharField()


class SignupApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [SignupRateThrottle]

    class Input(StrictInput):
        username = serializers.RegexField(r"^[\w.@+-]{3,150}$")
        password = serializers.CharField(write_only=True, max_length=128)
        email = serializers.EmailField(required=False, default="")

    def throttled(self, request: Request, wait: float | None) -> None:
        raise exceptions.Throttled(wait, detail=signup_refusal_message(wait))

    @extend_schema(request=Input, responses={201: TokenOutput})
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        user = volunteer_create(**data.validated_data, signup_address=client_address(request))
        return Response(
            {"username": user.username, "token": token_get_or_create(user=user)}, status=status.HTTP_201_CREATED
        )


class TokenLoginApi(APIView):
    """A token for a username and password; failed logins lock the username out (django-axes)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [LoginRateThrottle]

    class Input(StrictInput):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(write_only=True, max_length=128)

    @extend_schema(request=Input, responses=TokenOutput)
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        # With the request, django-axes counts the failure and refuses a locked-out username.
        user = authenticate(request, **data.validated_data)
        if user is None and getattr(request, "axes_locked_out", False):
            raise TooManyRequests(
                "Too many failed logins for this account from your network; wait and try again.",
                code="login_locked_out",
                retry_after=lockout_seconds(request),
            )
        if user is None:
            raise DomainError("Wrong username or password.", code="invalid_credentials")
        # A token login is a login: last_login moves and django-axes forgets the failures.
        user_logged_in.send(sender=type(user), request=request, user=user)
        return Response({"username": user.username, "token": token_get_or_create(user=user)})


class ProfileOutput(serializers.Serializer):
    display_name = serializers.CharField()
    public_on_leaderboards = serializers.BooleanField()
    newsletter_opt_in = serializers.BooleanField()


class MeApi(APIView):
    """The signed-in volunteer's public profile and preferences."""

    permission_classes = [IsAuthenticated]

    class Input(StrictInput):
        display_name = serializers.CharField(required=False, max_length=200)
        public_on_leaderboards = serializers.BooleanField(required=False)
        newsletter_opt_in = serializers.BooleanField(required=False)

    @extend_schema(responses=ProfileOutput)
    def get(self, request: Request) -> Response:
        return Response(ProfileOutput(profile_get_or_create(user=request.user)).data)

    @extend_schema(request=Input, responses=ProfileOutput)
    def patch(self, request: Request) -> Response:
        data = self.Input(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        profile = profile_update(user=request.user, **data.validated_data)
        return Response(ProfileOutput(profile).data)
