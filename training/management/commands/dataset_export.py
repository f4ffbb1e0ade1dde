"""`manage.py dataset_export PROJECT_SLUG OUT`: the approved data set as a folder or a .zip."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from challenges.models import Project
from common.errors import DomainError
from training.portability import dataset_export


class Command(BaseCommand):
    help = (
        "Export a project's approved photos as OUT/<label>/<sha256>.jpg plus manifest.json "
        "(hashes, splits, no volunteer names); OUT ending in .zip writes an archive."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project slug.")
        parser.add_argument("out", type=Path, help="A new folder, or a new file ending in .zip.")

    def handle(self, *args, project: str, out: Path, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project named {project!r}.")
        try:
            export = dataset_export(
                project=target, out=out, progress=lambda items, desc: tqdm(items, desc=desc, unit="photo")
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(
            f"{export.photo_count} photos written to {export.path}; dataset manifest sha256 {export.manifest_sha256}."
        ))
