from django.apps import AppConfig


class MobileApiConfig(AppConfig):
    name = "mobile_api"
    verbose_name = "Mobile API"

    def ready(self) -> None:
        # Distribution listens to training's publishing event (training never imports this app).
        from mobile_api.tasks import version_published_receive
        from training.signals import version_published

        version_published.connect(version_published_receive, dispatch_uid="mobile_api.version_distribute")
