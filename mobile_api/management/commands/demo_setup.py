"""`manage.py demo_setup`: the embedded demo (staff account, ants/bees project, model v1, an app key).

Re-runnable: every step keeps what is already there. It lives in mobile_api, the end of the loop,
because it sets up every room (challenges, photos, training, an app key) and imports them all.
"""
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from challenges.models import Challenge, Label, Project
from challenges.selectors import project_today
from mobile_api.models import AppKey
from mobile_api.services import app_key_create
from training.models import ModelVersion, TrainingPolicy

DEFAULT_PHOTOS = settings.ROOT_DIR.parent / "shared" / "data" / "hymenoptera" / "train"


class Command(BaseCommand):
    help = "Create the demo: a staff account, the ants/bees project and challenge, its photos, model v1."

    def add_arguments(self, parser):
        parser.add_argument("--photos", type=Path, default=None, help="Folder of <label>/<photo> files.")
        parser.add_argument("--no-train", action="store_true", help="Skip the first training run.")

    def handle(self, *args, photos=None, no_train=False, **options):
        username, password = self._staff_account()
        project = self._project()
        folder = photos or DEFAULT_PHOTOS
        if not folder.is_dir():
            raise CommandError(f"No photos at {folder}; pass --photos FOLDER with ants/ and bees/ inside.")
        call_command("photos_import", str(folder), project=project.slug, moderator=username, stdout=self.stdout)

        if not no_train and not ModelVersion.objects.filter(project=project).exists():
            self.stdout.write("Training the first model (the nightly job, run now)...")
            call_command("train_now", project=project.slug, stdout=self.stdout)
        latest = ModelVersion.objects.filter(project=project).order_by("-version").first()
        self.stdout.write(self.style.SUCCESS(
            f"Demo ready: project {project.slug!r}, model version {latest.version if latest else 'none yet'}."
        ))
        self.stdout.write(f"Staff login: {username} / {password}")
        self.stdout.write(f"Demo app key (X-App-Key): {self._app_key()}")

    def _staff_account(self) -> tuple[str, str]:
        """The demo admin; its password comes from the environment or is generated once."""
        username = os.environ.get("PLATFORM_ADMIN_USERNAME", "admin")
        password_file = settings.VAR_DIR / "admin-password.txt"
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None:
            known = password_file.read_text().strip() if password_file.exists() else "(unchanged; see createsuperuser)"
            return username, os.environ.get("PLATFORM_ADMIN_PASSWORD", known)
        password = os.environ.get("PLATFORM_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, password=password, email="")
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        return username, password

    def _app_key(self) -> str:
        """A key for trying the app protocol (mobile_api/client.py); created once, kept in var/."""
        key_file = settings.VAR_DIR / "demo-app-key.txt"
        if key_file.exists() and AppKey.objects.filter(name="Demo app", revoked_at__isnull=True).exists():
            return key_file.read_text().strip()
        AppKey.objects.filter(name="Demo app").delete()
        _, key = app_key_create(name="Demo app")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        return key

    def _project(self) -> Project:
        project, _ = Project.objects.get_or_create(
            slug="ants-bees",
            defaults={
                "title": "Ants and bees",
                "description": "Tell ants from bees: the first model of the platform.",
            },
        )
        # The demo's first night builds the float model and int8 in both formats (a couple of
        # minutes); the nightly default builds every variant. Admins change it on the policy.
        TrainingPolicy.objects.get_or_create(
            project=project,
            defaults={
                "compression_variants": ["fp32", "int8"],
                "note": "Demo: fp32 and int8 only, so the first model is ready in minutes; "
                "empty the variants for the full set (fp16, pruned, distilled, ...).",
            },
        )
        for name, description in (("ants", "Any ant, any size."), ("bees", "Honey bees, bumblebees, any bee.")):
            Label.objects.get_or_create(project=project, name=name, defaults={"description": description})
        challenge, created = Challenge.objects.get_or_create(
            project=project,
            day=project_today(project=project),
            defaults={
                "title": "Ants and bees where you would not expect them",
                "instructions": "On a kitchen counter, on a flower in the shade, close up or far away.",
            },
        )
        if created or not challenge.labels.exists():
            challenge.labels.set(project.labels.all())
        return project
