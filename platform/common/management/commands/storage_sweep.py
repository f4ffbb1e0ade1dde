"""`manage.py storage_sweep [--dry-run]`: remove stored objects no row owns; list rows missing theirs."""
from django.core.management.base import BaseCommand
from tqdm import tqdm

from common.storage_sweep import storage_sweep


class Command(BaseCommand):
    help = (
        "Delete objects under the row-owned storage folders that no row references and that are older "
        "than PLATFORM_ORPHAN_GRACE_SECONDS; report rows whose objects are missing (rows are kept)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List what would be deleted; delete nothing.")
        parser.add_argument(
            "--grace-seconds", type=int, default=None,
            help="Keep unreferenced objects younger than this (default: PLATFORM_ORPHAN_GRACE_SECONDS).",
        )

    def handle(self, *args, dry_run=False, grace_seconds=None, **options):
        result = storage_sweep(
            grace_seconds=grace_seconds,
            dry_run=dry_run,
            progress=lambda objects: tqdm(objects, desc="listing", unit="object"),
        )
        verb = "would delete" if dry_run else "deleted"
        for name in result.orphans:
            self.stdout.write(f"orphan ({verb}): {name}")
        for name in result.missing:
            self.stdout.write(self.style.WARNING(f"missing object of a row: {name}"))
        summary = (
            f"{result.listed} objects, {result.referenced} referenced; {len(result.orphans)} orphans "
            f"({verb} {len(result.orphans) if dry_run else result.deleted}, {result.delete_failed} failed), "
            f"{result.kept_young} unreferenced but too young, {len(result.missing)} missing."
        )
        style = self.style.WARNING if result.missing or result.delete_failed else self.style.SUCCESS
        self.stdout.write(style(summary))
