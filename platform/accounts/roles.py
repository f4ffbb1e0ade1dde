"""Roles: the Moderators group, so staff who moderate need no superuser powers.

Admins make a volunteer a moderator by ticking "staff status" and adding them to the group
in the Django admin. The group's permissions are kept in sync after every migrate.
"""
from __future__ import annotations

MODERATORS = "Moderators"

# (app_label, codename): what moderating, scheduling, curating and sending the newsletter need.
MODERATOR_PERMISSIONS = [
    ("submissions", "view_photo"), ("submissions", "change_photo"),
    ("challenges", "view_project"), ("challenges", "view_label"), ("challenges", "change_label"),
    ("challenges", "view_challenge"), ("challenges", "add_challenge"), ("challenges", "change_challenge"),
    ("challenges", "delete_challenge"),
    ("leaderboards", "view_scoretotal"), ("leaderboards", "view_leaderboardflag"),
    ("leaderboards", "view_curationaction"), ("leaderboards", "view_pointsentry"), ("leaderboards", "add_pointsentry"),
    ("newsletter", "view_newsletterissue"), ("newsletter", "change_newsletterissue"),
    ("newsletter", "view_newsletterdelivery"),
    ("training", "view_trainingrun"), ("training", "view_modelversion"), ("training", "view_modelartifact"),
]


def moderators_group_sync(**kwargs) -> None:
    """post_migrate: give the Moderators group exactly the permissions that exist so far.

    post_migrate fires once per app, in INSTALLED_APPS order, and permissions are created
    per app too; re-syncing each time ends with the full set after the last app.
    """
    from django.contrib.auth.models import Group, Permission
    from django.db.models import Q

    wanted = Q(pk__in=[])
    for app_label, codename in MODERATOR_PERMISSIONS:
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    group, _ = Group.objects.get_or_create(name=MODERATORS)
    group.permissions.set(Permission.objects.filter(wanted))
