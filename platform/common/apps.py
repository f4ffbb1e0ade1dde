from django.apps import AppConfig

from common.folders import embedded_folders_create


class CommonConfig(AppConfig):
    name = "common"

    def ready(self) -> None:
        # Here rather than at settings import: see common/folders.py.
        embedded_folders_create()
