from django.apps import AppConfig


class VerificationConfig(AppConfig):
    name = "verification"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from submissions.models import Photo
        from submissions.services import photo_moderated
        from verification.services import on_photo_created, on_photo_moderated

        photo_moderated.connect(on_photo_moderated, dispatch_uid="verification-staff-override")
        post_save.connect(on_photo_created, sender=Photo, dispatch_uid="verification-trusted-uploads")
