"""The Moderators group: staff moderate in the admin without being superusers."""
import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.roles import MODERATOR_PERMISSIONS, MODERATORS
from submissions.models import Photo
from tests.factories import UserFactory
from tests.moderation.conftest import make_photo

pytestmark = pytest.mark.django_db


def test_migrate_gives_the_group_every_listed_permission():
    granted = set(Group.objects.get(name=MODERATORS).permissions.values_list("content_type__app_label", "codename"))
    assert granted == set(MODERATOR_PERMISSIONS)  # a misspelt codename would be missing


def test_a_moderator_approves_in_the_admin_but_cannot_touch_accounts(client, project):
    photo = make_photo(project=project, volunteer=UserFactory())
    moderator = UserFactory(is_staff=True)
    client.force_login(moderator)
    changelist = reverse("admin:submissions_photo_changelist")
    assert client.get(changelist).status_code == 403  # staff alone is not enough

    moderator.groups.add(Group.objects.get(name=MODERATORS))
    assert client.get(changelist).status_code == 200
    client.post(changelist, {"action": "approve", "_selected_action": [photo.pk]})
    photo.refresh_from_db()
    assert photo.status == Photo.Status.APPROVED and photo.moderated_by == moderator
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert client.get(reverse("admin:challenges_challenge_add")).status_code == 200
