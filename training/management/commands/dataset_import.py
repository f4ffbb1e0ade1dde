"""`manage.py dataset_import EXPORT [--project SLUG] [--moderator USERNAME]`: load another instance's data set."""
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from common.errors import DomainError
from training.portability import dataset_import


class Command(BaseCommand):
    help = (
        "Import a dataset_export folder or .zip as approved photos, after checking every file "
        "against its manifest (re-runnable; photos already here are skipped)."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", type=Path, help="The export: a folder or a .zip archive.")
        parser.add_argument("--project", help="Project slug to import into (default: the exported project's).")
        parser.add_argument("--moderator", default=None, help="Staff username recorded as approver.")

    def handle(self, *args, source: Path, project=None, moderator=None, **options):
        staff = get_user_model().objects.filter(is_staff=True)
        approver = (staff.filter(username=moderator) if moderator else staff.order_by("pk")).first()
        if approver is None:
            raise CommandError("No staff account to record as approver; create one first (createsuperuser).")
        try:
            result = dataset_import(
                source=source, moderator=approver, project_slug=project,
                progress=lambda items, desc: tqdm(items, desc=desc, unit="photo"),
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(warning))
        for path, reason in result.refused.items():
            self.stderr.write(self.style.WARNING(f"refused {path}: {reason}"))
        created = " (project created)" if result.created_project else ""
        self.stdout.write(self.style.SUCCESS(
            f"{result.project.slug}{created}: {result.imported} imported, {result.duplicate} already there, "
            f"{len(result.refused)} refused."
        ))
        if result.same_dataset:
            self.stdout.write(f"Same data set as the export: manifest sha256 {result.manifest_sha256}.")
        else:
            self.stdout.write(self.style.WARNING(
                f"This project's data set (manifest sha256 {result.manifest_sha256}) differs from the export's "
                f"({result.source_manifest_sha256}): it holds other photos too, or some were refused."
            ))
