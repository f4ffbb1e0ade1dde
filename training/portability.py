"""Data portability: export a project's approved data set, import it into another instance.

An export is a folder or a .zip holding ``<label>/<sha256>.jpg`` (or ``.png``) for every photo of the
project's current dataset snapshot (the stored, metadata-free copies, never the original
uploads) and ``manifest.json``. The manifest names no volunteer. Each photo keeps its public
id, its exact bytes and its split key on import, so the importing instance builds a snapshot
with the same manifest sha256: the proof that both hold the same data set.

It lives in training because what it moves is a dataset snapshot: the photos, their hashes
and their splits come from `dataset_snapshot_create` and `dataset_split_keys`, never from a
second copy of those rules.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from challenges.models import Label, Project
from common.errors import Conflict, DomainError, ValidationFailed
from submissions.models import Photo
from submissions.services import ImportedPhoto, NewPhoto, photo_moderate, photo_upload
from training.ml.pipeline import split_for
from training.snapshots import dataset_snapshot_create, dataset_split_keys

FORMAT = "dataset-export"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MANIFEST_MAX_BYTES = 256 * 1024 * 1024

# progress(items, description) wraps each pass over the photos (a tqdm bar in the commands).
Progress = Callable[[Iterable, str], Iterable]


def _no_progress(items: Iterable, description: str) -> Iterable:
    return items


@dataclass(frozen=True)
class DatasetExport:
    """What an export wrote: where, how many photos, and the snapshot it holds."""

    path: Path
    photo_count: int
    manifest_sha256: str


@dataclass
class DatasetImport:
    """What an import did, and whether this instance now builds the same snapshot."""

    project: Project
    created_project: bool = False
    imported: int = 0
    duplicate: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # path -> why
    warnings: list[str] = field(default_factory=list)
    source_manifest_sha256: str = ""
    manifest_sha256: str = ""

    @property
    def same_dataset(self) -> bool:
        return self.manifest_sha256 == self.source_manifest_sha256


def dataset_export(*, project: Project, out: Path, progress: Progress = _no_progress) -> DatasetExport:
    """Write the project's approved data set to `out` (a folder, or a .zip when it ends so).

    Photos are streamed from storage one at a time and checked against their recorded sha256.
    Everything is written under a temporary name and renamed at the end, so a crash never
    leaves a half export where the finished one would be.
    """
    out = Path(out)
    if out.exists():
        raise Conflict(f"{out} already exists; choose a new path.", code="export_exists")
    if out.name.endswith((".tar", ".tar.gz", ".tgz")):
        raise ValidationFailed("Exports are folders or .zip archives.", code="unsupported_archive")
    snapshot = dataset_snapshot_create(project=project)
    holdout_percent = snapshot.manifest["holdout_percent"]
    entries = snapshot.manifest["photos"]
    by_id = {
        str(photo.public_id): photo
        for photo in Photo.objects.filter(project=project, status=Photo.Status.APPROVED).select_related("label")
    }
    split_keys = dataset_split_keys(list(by_id.values()))
    photo_entries = []
    for entry in entries:
        photo = by_id.get(entry["photo"])
        split_key = split_keys[photo.pk] if photo else ""
        # Moderated or re-linked since the snapshot was taken (a race, rare): its split key may be stale.
        if not photo or split_for(split_key, holdout_percent=holdout_percent) != entry["split"]:
            raise Conflict("The data set changed during the export; run it again.", code="dataset_changed")
        photo_entries.append(_export_entry(photo, entry=entry, split_key=split_key))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": timezone.now().isoformat(),
        "source": {"base_url": settings.PLATFORM_BASE_URL},
        "project": {
            "slug": project.slug,
            "title": project.title,
            "description": project.description,
            "time_zone": project.time_zone,
            "labels": [
                {"name": label.name, "order": order, "description": label.description,
                 "target_count": label.target_count}
                for order, label in enumerate(project.labels.all())
            ],
        },
        "holdout_percent": holdout_percent,
        "snapshot": {"manifest_sha256": snapshot.manifest_sha256, "label_counts": snapshot.label_counts},
        "photos": photo_entries,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _ZipWriter if out.suffix == ".zip" else _FolderWriter
    with writer.atomic(out) as write:
        written: set[str] = set()
        for entry in progress(photo_entries, "exporting"):
            if entry["path"] in written:  # two uploads that re-encoded to the same bytes
                continue
            with default_storage.open(by_id[entry["photo"]].image.name, "rb") as src:
                digest = write(entry["path"], src)
            if digest != entry["sha256"]:
                raise ValidationFailed(
                    f"Stored photo {entry['photo']} no longer matches its sha256; export stopped.",
                    code="stored_photo_changed",
                )
            written.add(entry["path"])
        write(MANIFEST_NAME, io.BytesIO(json.dumps(manifest, indent=1).encode()))
    return DatasetExport(path=out, photo_count=len(photo_entries), manifest_sha256=snapshot.manifest_sha256)


def dataset_export_file(*, project: Project) -> BinaryIO:
    """The project's export as an open .zip file to stream (to staff, from the admin).

    The file is unlinked at once: it takes disk space only until the handle is closed.
    """
    with tempfile.TemporaryDirectory(prefix="dataset-export-") as folder:
        path = dataset_export(project=project, out=Path(folder) / f"{project.slug}.zip").path
        handle = path.open("rb")
    return handle


def _export_entry(photo: Photo, *, entry: dict, split_key: str) -> dict:
    """One photo's manifest entry: no volunteer, moderator or app key (privacy)."""
    return {
        "path": f"{entry['label']}/{entry['sha256']}{Path(photo.image.name).suffix or '.jpg'}",
        "photo": entry["photo"],
        "label": entry["label"],
        "sha256": entry["sha256"],
        "split": entry["split"],
        "split_key": split_key,
        "width": photo.width,
        "height": photo.height,
        "source": photo.source,
        "created_at": photo.created_at.isoformat(),
    }


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: src.read(_CHUNK), b""):
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


class _ZipWriter:
    @staticmethod
    @contextmanager
    def atomic(out: Path) -> Iterator[Callable[[str, BinaryIO], str]]:
        fd, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as archive:
                def write(name: str, src: BinaryIO) -> str:
                    # JPEGs do not shrink: stored, not deflated (the manifest is deflated).
                    method = zipfile.ZIP_DEFLATED if name == MANIFEST_NAME else zipfile.ZIP_STORED
                    info = zipfile.ZipInfo(name, date_time=timezone.now().timetuple()[:6])
                    info.compress_type = method
                    info.external_attr = 0o644 << 16  # a regular file, readable once extracted
                    with archive.open(info, "w", force_zip64=True) as dst:
                        return _copy_hashing(src, dst)

                yield write
            os.replace(temp, out)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


class _FolderWriter:
    @staticmethod
    @contextmanager
    def atomic(out: Path) -> Iterator[Callable[[str, BinaryIO], str]]:
        temp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
        try:
            def write(name: str, src: BinaryIO) -> str:
                target = temp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as dst:
                    return _copy_hashing(src, dst)

            yield write
            temp.rename(out)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise


def dataset_import(
    *,
    source: Path,
    moderator: AbstractBaseUser,
    project_slug: str | None = None,
    progress: Progress = _no_progress,
) -> DatasetImport:
    """Import an export (folder or .zip) as approved photos; re-running imports nothing twice.

    Nothing is stored unless the whole export checks out first: a valid manifest, every path
    inside the export (no ``..``, no absolute path, no symlink), every file matching its
    sha256, and labels agreeing with an existing project. Then each photo goes through the
    upload pipeline (decoded, checked, exact duplicates skipped) keeping its public id, bytes
    and split key, and is approved by `moderator`, in the export's order (the snapshot lists
    photos in the order they were stored). A photo this instance already holds (same id and
    bytes: an earlier import, or the instance it was exported from) is skipped.
    """
    with _ExportReader.open(Path(source)) as reader:
        manifest = _manifest_checked(reader.read_manifest())
        entries = manifest["photos"]
        for entry in progress(entries, "verifying"):
            digest = reader.sha256(entry["path"])
            if digest != entry["sha256"]:
                raise ValidationFailed(
                    f"{entry['path']}: its sha256 is {digest}, the manifest says {entry['sha256']}; nothing imported.",
                    code="export_tampered",
                )
        slug = project_slug or manifest["project"]["slug"]
        project = _project_matching(manifest["project"], slug=slug)
        already_here = _photos_already_here(entries, slug=slug)
        created = project is None
        if created:
            project = _project_create(manifest["project"], slug=slug)
        result = DatasetImport(
            project=project, created_project=created, source_manifest_sha256=manifest["snapshot"]["manifest_sha256"]
        )
        if manifest["holdout_percent"] != settings.PLATFORM_HOLDOUT_PERCENT:
            result.warnings.append(
                f"The export was split with PLATFORM_HOLDOUT_PERCENT={manifest['holdout_percent']}; this "
                f"instance uses {settings.PLATFORM_HOLDOUT_PERCENT}, so some photos land in another split."
            )
        for entry in progress(entries, "importing"):
            if entry["photo"] in already_here:
                result.duplicate += 1
                continue
            data = reader.read(entry["path"])
            try:
                photo = photo_upload(new=NewPhoto(
                    project=project, label_name=entry["label"], upload=io.BytesIO(data), size=len(data),
                    volunteer=None, source=Photo.Source.IMPORT, status=Photo.Status.PENDING,
                    imported=ImportedPhoto(public_id=uuid.UUID(entry["photo"]), split_key=entry["split_key"]),
                )).photo
            except Conflict:
                result.duplicate += 1
                continue
            except DomainError as exc:
                result.refused[entry["path"]] = exc.message
                continue
            photo_moderate(photo=photo, moderator=moderator, approve=True)
            result.imported += 1
    result.manifest_sha256 = dataset_snapshot_create(project=project).manifest_sha256
    return result


def _manifest_checked(manifest: object) -> dict:
    """The manifest, if it is one this version reads and every entry is well formed."""
    def refuse(message: str) -> ValidationFailed:
        return ValidationFailed(f"{MANIFEST_NAME}: {message}; nothing imported.", code="export_invalid")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise refuse("not a data set export")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise refuse(f"format version {manifest.get('format_version')!r}; this instance reads {FORMAT_VERSION}")
    try:
        labels = {label["name"] for label in manifest["project"]["labels"]}
        if not (manifest["project"]["slug"] and manifest["snapshot"]["manifest_sha256"]):
            raise refuse("no project slug or snapshot hash")
        if not isinstance(manifest["holdout_percent"], int):
            raise refuse("holdout_percent is not a number")
        entries = manifest["photos"]
        seen: set[str] = set()
        for entry in entries:
            path, public_id = entry["path"], entry["photo"]
            uuid.UUID(public_id)
            if entry["label"] not in labels:
                raise refuse(f"{path}: unknown label {entry['label']!r}")
            if not (_SHA256.fullmatch(entry["sha256"]) and _SHA256.fullmatch(entry["split_key"])):
                raise refuse(f"{path}: a sha256 is not 64 lowercase hex digits")
            if public_id in seen:
                raise refuse(f"{path}: photo {public_id} is listed twice")
            seen.add(public_id)
    except (KeyError, TypeError, ValueError) as exc:
        raise refuse(f"missing or malformed field ({exc})") from exc
    return manifest


def _photos_already_here(entries: list[dict], *, slug: str) -> set[str]:
    """Public ids of the export this project already holds with the same bytes (to skip).

    The same id with other bytes, or in another project, is refused before anything is stored.
    """
    expected = {entry["photo"]: entry["sha256"] for entry in entries}
    ids = list(expected)
    here: set[str] = set()
    for start in range(0, len(ids), 500):
        found = Photo.objects.filter(public_id__in=ids[start : start + 500])
        for public_id, project_slug, sha256 in found.values_list("public_id", "project__slug", "sha256"):
            if project_slug != slug or sha256 != expected[str(public_id)]:
                raise Conflict(
                    f"Photo {public_id} already exists on this instance with other content or in another "
                    f"project ({project_slug}); nothing imported.",
                    code="photo_id_taken",
                )
            here.add(str(public_id))
    return here


def _project_matching(exported: dict, *, slug: str) -> Project | None:
    """The existing project to import into (its labels must be the export's), or None."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        return None
    names = {label["name"] for label in exported["labels"]}
    existing = set(project.labels.values_list("name", flat=True))
    if existing != names:
        missing, extra = sorted(names - existing), sorted(existing - names)
        raise ValidationFailed(
            f"Project {slug!r} has other labels than the export (missing here: {missing or 'none'}, "
            f"only here: {extra or 'none'}); nothing imported.",
            code="labels_differ",
        )
    return project


@transaction.atomic
def _project_create(exported: dict, *, slug: str) -> Project:
    """The exported project and its labels, under `slug`."""
    project = Project.objects.create(
        slug=slug, title=exported.get("title") or slug, description=exported.get("description", ""),
        time_zone=exported.get("time_zone") or "UTC",
    )
    Label.objects.bulk_create(
        Label(project=project, name=label["name"], description=label.get("description", ""),
              target_count=label.get("target_count", Label.PRODUCTION_TARGET))
        for label in exported["labels"]
    )
    return project


class _ExportReader:
    """Reads an export's files by their manifest path, refusing any path that leaves the export."""

    def __init__(self, root: Path | None = None, archive: zipfile.ZipFile | None = None):
        self.root, self.archive = root, archive

    @classmethod
    @contextmanager
    def open(cls, source: Path) -> Iterator[_ExportReader]:
        if source.is_dir():
            yield cls(root=source.resolve())
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                for info in archive.infolist():
                    _check_member(info)
                yield cls(archive=archive)
        else:
            raise ValidationFailed(f"{source} is neither a folder nor a .zip archive.", code="export_invalid")

    def read_manifest(self) -> object:
        try:
            return json.loads(self.read(MANIFEST_NAME, limit=_MANIFEST_MAX_BYTES))
        except ValueError as exc:
            raise ValidationFailed(f"{MANIFEST_NAME} is not valid JSON ({exc}).", code="export_invalid") from exc

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self._open(name) as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def read(self, name: str, limit: int | None = None) -> bytes:
        """One file's bytes (one photo at a time in memory), refused above the upload limit."""
        limit = limit or settings.PLATFORM_UPLOAD_MAX_BYTES
        with self._open(name) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ValidationFailed(f"{name}: larger than {limit} bytes; nothing imported.", code="export_invalid")
        return data

    def _open(self, name: str) -> BinaryIO:
        _check_path(name)
        try:
            if self.archive is not None:
                return self.archive.open(name)
            path = (self.root / name).resolve()
            if not path.is_relative_to(self.root):
                raise _escape(name)
            return path.open("rb")
        except (KeyError, FileNotFoundError) as exc:
            raise ValidationFailed(f"{name}: listed in the manifest but missing; nothing imported.",
                                   code="export_invalid") from exc


def _escape(name: str) -> ValidationFailed:
    return ValidationFailed(f"{name}: the path leaves the export; nothing imported.", code="export_path_escape")


def _check_path(name: str) -> None:
    """Relative, forward slashes, no `..`: the same rule for folders and archives."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", name):
        raise _escape(name)


def _check_member(info: zipfile.ZipInfo) -> None:
    _check_path(info.filename)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ValidationFailed(f"{info.filename}: a symbolic link in the archive; nothing imported.",
                               code="export_path_escape")
