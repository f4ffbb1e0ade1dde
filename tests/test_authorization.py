"""Who may do what: every route of the platform, for each kind of caller.

The callers are an anonymous visitor, the volunteer who owns the photos in play, another
volunteer, and a staff member (is_staff, no superuser powers). API calls authenticate as
apps do (a token); pages with a browser session. Two more callers send only an app key
(X-App-Key), as installed apps do: a valid one ("app") and a revoked one ("revoked_app");
a key is not a user, so outside the app endpoints they are answered like an anonymous
visitor. A new route (or a new method of an API route) fails
`test_every_route_is_in_the_matrix` until its row is added here.
"""
from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.views import APIView

from mobile_api.services import app_key_create, app_key_revoke, channel_create, release_pause, release_promote
from newsletter.services import unsubscribe_token_make
from submissions.models import Photo
from tests.conftest import jpeg_bytes
from tests.factories import UserFactory
from tests.mobile_api.test_manifest import publish
from tests.moderation.conftest import make_photo
from verification.models import VerificationDecision, VerificationTask

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "owner", "other", "staff")
APP_ROLES = ("app", "revoked_app")  # expected like "anonymous" unless a row says otherwise
LOGIN = "login"  # a redirect to the login page
_unique = itertools.count()


def everyone(status):
    return dict.fromkeys(ROLES, status)


def signed_in(status, *, anonymous=401):
    return {"anonymous": anonymous, "owner": status, "other": status, "staff": status}


def staff_only(status):
    return {"anonymous": 401, "owner": 403, "other": 403, "staff": status}


def owner_and_staff(status, *, anonymous, other=404):
    return {"anonymous": anonymous, "owner": status, "other": other, "staff": status}


def app_key(status):
    """An app endpoint: no role but an app with a valid key gets in."""
    return everyone(401) | {"app": status, "revoked_app": 401}


@dataclass(frozen=True)
class Route:
    method: str
    url: str  # formatted with the world's ids
    expected: dict[str, int | str]
    data: object = None  # a dict, or a callable(world, role) giving one
    multipart: bool = False
    # For lists: the roles that see the owner's pending photo in the body (no one else may).
    pending_visible_to: frozenset[str] | None = None


def _upload(world, role):
    image = io.BytesIO(jpeg_bytes(comment=f"{role}-{next(_unique)}".encode()))
    image.name = "photo.jpg"
    return {"challenge": world["challenge"], "label": "ants", "image": image}


def _model_import(world, role):
    from tests.training.conftest import colour_classifier

    model = io.BytesIO(colour_classifier(["ants", "bees"]))
    model.name = "colours.onnx"
    return {"file": model, "labels": "ants,bees"}


def _feedback(world, role):
    image = io.BytesIO(jpeg_bytes(comment=f"feedback-{role}-{next(_unique)}".encode()))
    image.name = "photo.jpg"
    return {"install_id": "install-0001", "photo": image, "predicted_label": "bees", "label": "ants", "version": 1}


ROUTES = [
    # --- accounts ---
    Route("post", "/api/v1/auth/signup/", everyone(201),
          data=lambda w, role: {"username": f"new-{role}-{next(_unique)}", "password": "a long enough passphrase 7"}),
    Route("post", "/api/v1/auth/token/", everyone(200),
          data={"username": "owner", "password": "correct horse battery staple"}),
    Route("get", "/api/v1/me/", signed_in(200)),
    Route("patch", "/api/v1/me/", signed_in(200), data=lambda w, role: {"display_name": f"Ant fan {next(_unique)}"}),
    Route("get", "/api/v1/me/impact/", signed_in(200)),
    # --- challenges ---
    Route("get", "/api/v1/projects/", everyone(200)),
    Route("get", "/api/v1/challenges/today/?project={project}", everyone(200)),
    # --- photos (volunteer) ---
    Route("get", "/api/v1/photos/", signed_in(200), pending_visible_to=frozenset({"owner"})),
    Route("post", "/api/v1/photos/", signed_in(201), data=_upload, multipart=True),
    Route("get", "/api/v1/photos/{pending}/", owner_and_staff(200, anonymous=401) | {"staff": 404}),
    Route("delete", "/api/v1/photos/{pending}/", owner_and_staff(204, anonymous=401) | {"staff": 404}),
    # --- moderation (staff) ---
    Route("get", "/api/v1/moderation/photos/", staff_only(200), pending_visible_to=frozenset({"staff"})),
    Route("post", "/api/v1/moderation/photos/{pending}/decision/", staff_only(200), data={"decision": "approve"}),
    Route("post", "/api/v1/moderation/photos/{pending}/relabel/", staff_only(200), data={"label": "bees"}),
    Route("post", "/api/v1/moderation/photos/{approved}/feature/", staff_only(200), data={"featured": True}),
    # --- verification: "other" takes part and holds a task; the owner takes part with nothing to verify ---
    Route("get", "/api/v1/verification/next/?project={project}",
          {"anonymous": 401, "owner": 204, "other": 200, "staff": 403}),
    Route("post", "/api/v1/verification/{task}/vote/", {"anonymous": 401, "owner": 404, "other": 200, "staff": 404},
          data={"answer": "yes"}),
    Route("get", "/api/v1/verification/pairs/?project={project}", staff_only(200)),
    Route("post", "/api/v1/verification/decisions/{decision}/reverse/", staff_only(200), data={"reason": "check"}),
    # --- leaderboards ---
    Route("get", "/api/v1/projects/{project}/leaderboards/all/", everyone(200)),
    # --- apps ---
    Route("get", "/api/mobile/v1/models/{project}/latest", everyone(200)),
    # Downloads, telemetry and feedback need an app key (X-App-Key): only the "app" caller sends a valid one.
    Route("get", "/api/mobile/v1/models/{project}/versions/1/onnx-fp32", app_key(200)),
    # The key is accepted; there is no patch from a version to itself.
    Route("get", "/api/mobile/v1/models/{project}/versions/1/onnx-fp32/from/1", app_key(404)),
    Route("post", "/api/mobile/v1/models/{project}/telemetry", app_key(202),
          data={"install_id": "install-0001",
                "events": [{"version": 1, "format": "onnx", "variant": "fp32", "event": "loaded"}]}),
    Route("post", "/api/mobile/v1/models/{project}/feedback", app_key(201), data=_feedback, multipart=True),
    Route("get", "/api/mobile/v1/staff/models/{project}/channels/{channel}/telemetry", staff_only(200)),
    Route("get", "/api/mobile/v1/models/{project}/versions/1/card", everyone(200)),
    # Update checks need an app key (X-App-Key).
    Route("get", "/api/mobile/v1/models/{project}/update?install_id=install-0001&app_version=1.0&platform=ios"
                 "&formats=onnx", app_key(200)),
    # --- releases (staff) ---
    Route("post", "/api/mobile/v1/staff/models/{project}/channels/{channel}/promote", staff_only(201),
          data={"version": 3}),
    Route("post", "/api/mobile/v1/staff/models/{project}/channels/{channel}/rollout", staff_only(200),
          data={"version": 2, "rollout_percent": 30}),
    Route("post", "/api/mobile/v1/staff/models/{project}/channels/{channel}/pause", staff_only(200),
          data={"version": 1}),
    Route("post", "/api/mobile/v1/staff/models/{project}/channels/{channel}/resume", staff_only(200),
          data={"version": 2}),
    Route("post", "/api/mobile/v1/staff/models/{project}/channels/{channel}/rollback", staff_only(200),
          data={"version": 2}),
    Route("get", "/api/mobile/v1/staff/models/{project}/channels/{channel}/history", staff_only(200)),
    Route("get", "/api/mobile/v1/staff/models/{project}/channels/{channel}/resolve?bucket=17", staff_only(200)),
    Route("post", "/api/mobile/v1/staff/models/{project}/versions/import", staff_only(201), data=_model_import,
          multipart=True),
    Route("get", "/api/schema/", everyone(200)),
    Route("get", "/api/docs/", everyone(200)),
    # --- web pages ---
    Route("get", "/", everyone(200), pending_visible_to=frozenset({"owner"})),
    Route("get", "/accounts/login/", everyone(200)),
    Route("get", "/accounts/signup/", everyone(200)),
    Route("post", "/accounts/logout/", everyone(302)),
    Route("get", "/me/", signed_in(200, anonymous=LOGIN)),
    Route("get", "/me/photos/", signed_in(200, anonymous=LOGIN), pending_visible_to=frozenset({"owner"})),
    Route("get", "/me/impact/", signed_in(200, anonymous=LOGIN)),
    Route("post", "/challenges/{challenge}/photos/", signed_in(302, anonymous=LOGIN), data=_upload, multipart=True),
    Route("get", "/photos/{pending}/image", owner_and_staff(200, anonymous=LOGIN)),
    Route("get", "/photos/{pending}/display", owner_and_staff(200, anonymous=404)),
    Route("get", "/photos/{pending}/thumbnail", owner_and_staff(200, anonymous=404)),
    Route("get", "/photos/{featured}/display", everyone(200)),
    Route("get", "/photos/{featured}/thumbnail", everyone(200)),
    Route("get", "/labels/{label}/example", everyone(200)),
    Route("get", "/gallery/", everyone(200)),
    Route("get", "/verify/", signed_in(200, anonymous=LOGIN)),
    Route("post", "/verify/{task}/", {"anonymous": LOGIN, "owner": 404, "other": 302, "staff": 404},
          data={"answer": "yes"}),
    Route("get", "/verify/{task}/image", {"anonymous": LOGIN, "owner": 404, "other": 200, "staff": 404}),
    Route("get", "/leaderboards/", everyone(200)),
    Route("get", "/releases/", everyone(200)),
    Route("get", "/newsletter/unsubscribe/{unsubscribe}/", everyone(200)),
    Route("post", "/newsletter/unsubscribe/{unsubscribe}/", everyone(200)),
    Route("get", "/admin/", {"anonymous": LOGIN, "owner": LOGIN, "other": LOGIN, "staff": 200}),
    # --- operations (ops): probes for load balancers, the admin's operations page ---
    Route("get", "/healthz", everyone(200)),
    Route("get", "/readyz", everyone(200)),
    Route("get", "/admin/ops/", {"anonymous": LOGIN, "owner": LOGIN, "other": LOGIN, "staff": 200}),
]


@pytest.fixture
def world(project, challenge):
    owner = UserFactory(username="owner")
    pending = make_photo(project=project, volunteer=owner, challenge=challenge)
    approved = make_photo(project=project, volunteer=owner, status=Photo.Status.APPROVED, color=(20, 200, 20))
    featured = make_photo(
        project=project, volunteer=owner, status=Photo.Status.APPROVED, featured=True, color=(20, 20, 200)
    )
    for photo in (pending, featured):  # copies as the upload pipeline makes them
        photo.display_image.name = default_storage.save(f"display/{photo.public_id}.jpg", ContentFile(jpeg_bytes()))
        photo.thumbnail.name = default_storage.save(f"thumbs/{photo.public_id}.jpg", ContentFile(jpeg_bytes()))
        photo.save()
    label = project.labels.get(name="ants")
    label.example_photo.name = default_storage.save("labels/examples/ant.jpg", ContentFile(jpeg_bytes()))
    label.save()
    publish(project, 1, b"model bytes")
    # A stable channel: v1 out to everyone, v2 paused at 20%, v3 published but not released.
    for number in (2, 3):
        publish(project, number, f"model bytes {number}".encode())
    stable = channel_create(project=project, name="stable")
    release_promote(channel=stable, version=project.model_versions.get(version=1))
    canary = release_promote(channel=stable, version=project.model_versions.get(version=2), rollout_percent=20)
    release_pause(release=canary)
    retired, retired_key = app_key_create(name="Retired app")
    other = UserFactory()
    task, decision = _verification_world(project=project, other=other, pending=pending, approved=approved)
    app_key_revoke(app_key=retired)
    return {
        "app_keys": {"app": app_key_create(name="App")[1], "revoked_app": retired_key},
        "users": {"owner": owner, "other": other, "staff": UserFactory(is_staff=True)},
        "task": task.public_id, "decision": decision.pk,
        "project": project.slug, "channel": "stable", "challenge": challenge.pk, "label": label.pk,
        "pending": pending.public_id, "approved": approved.public_id, "featured": featured.public_id,
        "unsubscribe": unsubscribe_token_make(user=owner),
    }


def _verification_world(*, project, other, pending, approved):
    """`other` takes part (an approved photo of their own) and is asked about the owner's pending photo;
    the approved photo carries an automatic decision staff may reverse."""
    make_photo(project=project, volunteer=other, status=Photo.Status.APPROVED, color=(90, 90, 90))
    task = VerificationTask.objects.create(project=project, volunteer=other, photo=pending, label_asked=pending.label)
    decision = VerificationDecision.objects.create(photo=approved, outcome="approved", yes_weight=7, no_weight=0,
                                                   votes=[])
    return task, decision


def _client(world, route: Route, role: str):
    if role in APP_ROLES:  # an app: its key and nothing else
        headers = {"HTTP_X_APP_KEY": world["app_keys"][role]}
        return APIClient(**headers) if route.url.startswith("/api/") else Client(**headers)
    user = world["users"].get(role)
    if route.url.startswith("/api/"):
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        return client
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _call(world, route: Route, role: str):
    client = _client(world, route, role)
    url = route.url.format(**world)
    data = route.data(world, role) if callable(route.data) else route.data
    if route.multipart:
        return client.post(url, data)  # Django encodes a dict with a file as multipart
    if route.method == "get":
        return client.get(url)
    return getattr(client, route.method)(url, data, content_type="application/json")


@pytest.mark.parametrize("role", ROLES + APP_ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method.upper()} {r.url}")
def test_access(world, route: Route, role: str):
    response = _call(world, route, role)
    expected = route.expected.get(role, route.expected["anonymous"])
    if expected == LOGIN:
        assert response.status_code == 302, response.content[:300]
        assert "login" in response["Location"]
    else:
        assert response.status_code == expected, getattr(response, "content", b"")[:300]
    if response.status_code >= 400 and response.get("Content-Type", "").startswith("application/json"):
        assert set(response.json()["error"]) >= {"code", "message"}
    if route.pending_visible_to is not None:
        shown = str(world["pending"]) in response.content.decode()
        assert shown == (role in route.pending_visible_to)


def test_every_route_is_in_the_matrix():
    """Each URL pattern (admin aside) appears in ROUTES, so new endpoints get a row."""
    covered = {_pattern_of(route.url) for route in ROUTES}
    patterns = dict(_patterns(get_resolver().url_patterns))
    missing = sorted(set(patterns) - covered)
    assert not missing, f"add these routes to the authorization matrix: {missing}"
    # Every method an API view answers has its row too (pages answer what their rows show).
    rows = {(_pattern_of(route.url), route.method) for route in ROUTES}
    methods = {(path, method) for path, view in patterns.items() for method in _api_methods(view)}
    assert not sorted(methods - rows), f"add these methods to the authorization matrix: {sorted(methods - rows)}"


def _patterns(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if str(pattern.pattern) == "admin/":
                yield "/admin/", None
                continue
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield "/" + prefix + str(pattern.pattern), pattern.callback


def _api_methods(view) -> list[str]:
    cls = getattr(view, "cls", None)
    if not (isinstance(cls, type) and issubclass(cls, APIView)):
        return []
    return [method for method in ("get", "post", "put", "patch", "delete") if hasattr(cls, method)]


def _pattern_of(url: str) -> str:
    """The route pattern a matrix URL exercises: its path with the {placeholders} as converters."""
    path = url.split("?")[0]
    replacements = {
        "{pending}": "<uuid:photo_id>", "{approved}": "<uuid:photo_id>", "{featured}": "<uuid:photo_id>",
        "{challenge}": "<int:challenge_id>", "{label}": "<int:label_id>", "{unsubscribe}": "<str:token>",
        "{channel}": "<slug:channel>", "{task}": "<uuid:task_id>", "{decision}": "<int:decision_id>",
        "/1/onnx-fp32/from/1": "/<int:version>/<slug:variant>/from/<int:from_version>",
        "/1/onnx-fp32": "/<int:version>/<slug:variant>",
        "/1/card": "/<int:version>/card",
    }
    for placeholder, converter in replacements.items():
        path = path.replace(placeholder, converter)
    if "leaderboards/all/" in path:
        return path.replace("{project}", "<slug:slug>").replace("/all/", "/<str:period>/")
    return path.replace("{project}", "<slug:name>")


def test_the_upload_in_the_matrix_really_stores_a_photo(world):
    """Guards the matrix itself: the upload row sends an image the pipeline accepts."""
    route = next(r for r in ROUTES if r.url == "/api/v1/photos/" and r.method == "post")
    before = Photo.objects.count()
    assert _call(world, route, "other").status_code == 201
    assert Photo.objects.count() == before + 1
