from django.apps import AppConfig


class VerificationConfig(AppConfig):
    name = "verification"

    def ready(self) -> None:
        from submissions.services import photo_moderated
        from verification.services import on_photo_moderated

        photo_moderated.connect(on_photo_moderated, dispatch_uid="verification-staff-override")
