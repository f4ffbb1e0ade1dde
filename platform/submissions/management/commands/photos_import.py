"""`manage.py photos_import FOLDER --project SLUG`: seed a project with approved photos."""
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from challenges.selectors import project_get
from common.errors import DomainError
from submissions.services import photo_import_folder


class Command(BaseCommand):
    help = "Import FOLDER/<label>/<photo> files as approved photos (re-runnable; duplicates are skipped)."

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--project", help="Project slug (optional when there is only one).")
        parser.add_argument("--moderator", default=None, help="Staff username recorded as approver.")

    def handle(self, *args, folder: Path, project=None, moderator=None, **options):
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
        try:
            target = project_get(slug=project)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        staff = get_user_model().objects.filter(is_staff=True)
        approver = (staff.filter(username=moderator) if moderator else staff.order_by("pk")).first()
        if approver is None:
            raise CommandError("No staff account to record as approver; create one first (createsuperuser).")
        counts = photo_import_folder(
            project=target,
            folder=folder,
            moderator=approver,
            progress=lambda files: tqdm(files, desc="importing", unit="photo"),
        )
        self.stdout.write(self.style.SUCCESS(f"{counts['imported']} imported, {counts['duplicate']} already there, {counts['refused']} refused."))
