"""`manage.py model_import PROJECT FILE [--labels ...] [--input-size N --mean R,G,B --std R,G,B]`."""
from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from challenges.selectors import project_get
from common.errors import DomainError
from training.imports import ImportRequest, labels_parse, model_version_import, triple_parse


def _labels(value: str) -> list[str]:
    path = Path(value)
    # A label file (one name per line, as Firebase and TFLite ship them) or the names themselves.
    return labels_parse(path.read_text(encoding="utf-8") if path.is_file() else value)


class Command(BaseCommand):
    help = (
        "Publish a model trained elsewhere (ONNX, ExecuTorch .pte, TFLite, Core ML .mlmodel or zipped "
        ".mlpackage) as the project's next version, after verifying it."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project slug (the model's name in the app protocol).")
        parser.add_argument("file", type=Path)
        parser.add_argument("--labels", type=_labels,
                            help="Names in output order: a label file, a JSON list or comma-separated.")
        parser.add_argument("--input-size", type=int, help="Square input side in pixels (when not fixed in the file).")
        parser.add_argument("--resize", type=int, help="Shorter side before the centre crop (default: size x 256/224).")
        parser.add_argument("--mean", type=triple_parse, help="Per channel R,G,B, pixels scaled to [0, 1].")
        parser.add_argument("--std", type=triple_parse, help="Per channel R,G,B.")
        parser.add_argument("--notes", default="", help="Release notes.")
        parser.add_argument("--user", help="Staff username recorded as the importer.")

    def handle(self, *args, project, file: Path, **options):
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"], is_staff=True).first()
            if user is None:
                raise CommandError(f"No staff user {options['user']!r}.")
        if not file.is_file():
            raise CommandError(f"No file {file}.")
        try:
            target = project_get(slug=project)
            with open(file, "rb") as fh:
                version = model_version_import(
                    project=target, file=fh, filename=file.name,
                    request=ImportRequest(
                        labels=options["labels"], input_size=options["input_size"], resize=options["resize"],
                        mean=options["mean"], std=options["std"],
                    ),
                    release_notes=options["notes"], user=user,
                )
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        artifact = version.artifacts.get()
        accuracy = (version.metrics or {}).get("accuracy_interval")
        self.stdout.write(
            f"Published {target.slug} version {version.version}: {artifact.format} {artifact.variant}, "
            f"{artifact.size} bytes, sha256 {artifact.sha256}."
        )
        if accuracy:
            low, high = accuracy["ci95"]
            self.stdout.write(
                f"Holdout accuracy {accuracy['value']:.3f} (95% CI {low:.3f}-{high:.3f}, n={accuracy['n']})."
            )
        else:
            self.stdout.write((version.model_card.get("imported") or {}).get("note", ""))
