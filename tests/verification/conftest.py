"""A small crowd: gold photos staff approved, voters with a known record on gold, API clients."""
from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from submissions.models import Photo
from tests.factories import UserFactory
from tests.moderation.conftest import make_photo
from verification.models import VerificationTask
from verification.services import rng


@pytest.fixture(autouse=True)
def _defaults(settings):
    """The shipped defaults, except no gold in new tasks unless a test asks for it."""
    settings.PLATFORM_VERIFY_GOLD_SHARE = 0.0
    settings.PLATFORM_VERIFY_RATE = "1000/min"
    rng.seed(19)  # which tasks are gold, and which label gold asks: repeatable


@pytest.fixture
def moderator(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def gold(project, moderator):
    """Twelve photos staff approved (each from its own volunteer)."""
    return [
        make_photo(project=project, label="ants" if i % 2 else "bees", volunteer=UserFactory(),
                   status=Photo.Status.APPROVED, moderated_by=moderator, color=(i * 20, 40, 90))
        for i in range(12)
    ]


@pytest.fixture
def make_voter(project, gold):
    """A volunteer taking part in the project, with `right` and `wrong` answers on gold."""

    def factory(right: int = 12, wrong: int = 0, **user_fields):
        user = UserFactory(**user_fields)
        make_photo(project=project, volunteer=user, status=Photo.Status.APPROVED, color=(1, 2, 3))
        for index in range(right + wrong):
            photo = gold[index]
            VerificationTask.objects.create(
                project=project, volunteer=user, photo=photo, label_asked=photo.label, is_gold=True,
                answer="yes", answered_at=timezone.now(), correct=index < right,
            )
        return user

    return factory


@pytest.fixture
def uploader(db):
    return UserFactory()


@pytest.fixture
def pending(project, uploader):
    return make_photo(project=project, volunteer=uploader, label="ants", color=(200, 200, 10))


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def vote(user, project, answer: str, *, expect_photo=None):
    """Ask for the next task as `user` and answer it; returns the vote's response."""
    client = client_for(user)
    task = client.get(f"/api/v1/verification/next/?project={project.slug}")
    assert task.status_code == 200, task.content
    if expect_photo is not None:
        assert VerificationTask.objects.get(public_id=task.json()["id"]).photo_id == expect_photo.pk
    return client.post(f"/api/v1/verification/{task.json()['id']}/vote/", {"answer": answer}, format="json")
