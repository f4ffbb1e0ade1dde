"""The orphan sweep: stored objects that no row owns are removed, rows without objects reported.

Objects and rows cannot change in one transaction. Every writer stores its objects first and
then commits the row (photo uploads, model publishes, patches) and cleans up when the row
fails, but a process killed in between, or a cleanup that meets a storage outage, leaves
objects that nothing points at. They cost money and hold photos a volunteer may have
withdrawn, so a daily task (and ``manage.py storage_sweep``) deletes them.

An upload in flight has stored its objects but not yet committed its row: an unreferenced
object is an orphan only once it is older than ``PLATFORM_ORPHAN_GRACE_SECONDS``.
Only the folders that rows own are swept; static manifests, the feature cache and export
templates live beside them without rows and are never touched.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.apps import apps
from django.conf import settings
from django.core.files.storage import Storage, default_storage
from django.db import models
from django.utils import timezone

logger = logging.getLogger(__name__)

# Folders whose every object belongs to a row's FileField: photos (image, display copy,
# thumbnail), model files and their binary patches, label example photos.
ROW_OWNED_PREFIXES = ("photos/", "models/", "labels/examples/")


@dataclass
class StorageSweep:
    """What one sweep found: orphans deleted (or, in a dry run, to delete) and rows missing objects."""

    listed: int = 0
    referenced: int = 0
    orphans: list[str] = field(default_factory=list)
    kept_young: int = 0
    deleted: int = 0
    delete_failed: int = 0
    missing: list[str] = field(default_factory=list)
    dry_run: bool = False


def storage_sweep(
    *,
    grace_seconds: int | None = None,
    dry_run: bool = False,
    storage: Storage | None = None,
    progress: Callable[[Iterable], Iterable] = iter,
) -> StorageSweep:
    """Delete unreferenced objects older than the grace period; report referenced names with no object.

    One query per model with file fields (not one per object) and one listing per owned
    folder. Rows are read before the listing, so an upload that commits meanwhile only adds
    young objects, which are kept. Rows whose objects are missing are logged and counted,
    never deleted: whoever reads them gets a 404 for that file, and an admin decides.
    """
    storage = storage or default_storage
    grace = settings.PLATFORM_ORPHAN_GRACE_SECONDS if grace_seconds is None else grace_seconds
    referenced = {name for name in _referenced_names() if name.startswith(ROW_OWNED_PREFIXES)}
    cutoff = timezone.now() - dt.timedelta(seconds=grace)
    result = StorageSweep(referenced=len(referenced), dry_run=dry_run)

    seen: set[str] = set()
    for name, modified in progress(_stored_objects(storage)):
        seen.add(name)
        if name in referenced:
            continue
        if modified > cutoff:
            result.kept_young += 1
            continue
        result.orphans.append(name)
        if dry_run:
            continue
        try:
            storage.delete(name)
        except Exception as exc:  # the next sweep tries again; one stuck object must not stop it
            logger.warning("storage sweep: could not delete %s: %s", name, exc)
            result.delete_failed += 1
        else:
            result.deleted += 1
    result.listed = len(seen)
    result.missing = sorted(referenced - seen)

    if result.missing:
        logger.warning(
            "storage sweep: %d stored names referenced by rows are missing, e.g. %s",
            len(result.missing), ", ".join(result.missing[:10]),
        )
    logger.info(
        "storage sweep%s: %d objects listed, %d referenced, %d orphans (%d deleted, %d failed), "
        "%d unreferenced but younger than %d s, %d missing",
        " (dry run)" if dry_run else "", result.listed, result.referenced, len(result.orphans),
        result.deleted, result.delete_failed, result.kept_young, grace, len(result.missing),
    )
    return result


def _referenced_names() -> set[str]:
    """Every stored name any row's FileField holds: discovered, so a new file field counts at once."""
    names: set[str] = set()
    for model in apps.get_models():
        fields = [f.attname for f in model._meta.concrete_fields if isinstance(f, models.FileField)]
        if not fields:
            continue
        for row in model._base_manager.values_list(*fields).iterator(chunk_size=5000):
            names.update(name for name in row if name)
    return names


def _stored_objects(storage: Storage) -> Iterator[tuple[str, dt.datetime]]:
    """(name, last modified) of every object under the owned folders.

    On S3 one paginated listing per folder gives names and ages together (no request per
    object); any other storage is walked with ``listdir`` and ``get_modified_time``.
    """
    bucket = getattr(storage, "bucket", None)
    for prefix in ROW_OWNED_PREFIXES:
        if bucket is not None and hasattr(storage, "_normalize_name"):
            # django-storages' S3Storage: keys carry the storage's location prefix; names do not.
            location = storage.location.strip("/")
            for summary in bucket.objects.filter(Prefix=storage._normalize_name(prefix)):
                yield (summary.key[len(location) + 1:] if location else summary.key), summary.last_modified
        else:
            yield from _walk(storage, prefix.rstrip("/"))


def _walk(storage: Storage, folder: str) -> Iterator[tuple[str, dt.datetime]]:
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    for file in files:
        name = f"{folder}/{file}"
        yield name, storage.get_modified_time(name)
    for sub in folders:
        yield from _walk(storage, f"{folder}/{sub}")
