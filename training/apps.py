from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training and model registry"

    def ready(self) -> None:
        # The volunteer side announces photos that await the current model's score; training
        # queues the scoring. A signal, so nothing on the volunteer side imports training.
        from submissions.services import photo_followups_due
        from training.tasks import photo_followups_queue

        photo_followups_due.connect(photo_followups_queue, dispatch_uid="training.photo_followups_queue")
