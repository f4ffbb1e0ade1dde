from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from accounts.roles import moderators_group_sync

        post_migrate.connect(moderators_group_sync, dispatch_uid="accounts.moderators_group_sync")
