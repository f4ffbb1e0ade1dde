"""Dataset snapshots: the approved photos frozen into a canonical manifest, and their splits.

A photo's split follows a content hash (its near-duplicate group's root), so it never changes as
photos arrive; identical manifests share one snapshot row.
"""
from __future__ import annotations

import hashlib
import json

from django.conf import settings

from challenges.models import Project
from submissions.models import Photo
from submissions.selectors import photo_list_approved
from training.models import DatasetSnapshot


def dataset_manifest_bytes(manifest: dict) -> bytes:
    """The canonical JSON of a manifest: the bytes its sha256 is taken over."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def dataset_snapshot_create(*, project: Project) -> DatasetSnapshot:
    """Freeze the approved photos into an immutable manifest; reuse an identical one.

    Each photo's split comes from a content hash, so it never changes as photos are added;
    a near duplicate takes the split of its group's root (the end of its
    ``near_duplicate_of`` chain), so a photo and its near copy never straddle train and holdout.
    An imported photo keeps the split its source instance gave it (see `dataset_split_keys`).
    """
    manifest, counts = dataset_snapshot_manifest(project=project)
    return dataset_snapshot_store(project=project, manifest=manifest, label_counts=counts)


def dataset_snapshot_manifest(*, project: Project) -> tuple[dict, dict[str, dict[str, int]]]:
    """The manifest a snapshot of the approved photos would hold, and its label counts; writes nothing."""
    from training.ml.pipeline import split_for  # pure Python, no torch at import

    holdout_percent = settings.PLATFORM_HOLDOUT_PERCENT
    photos = list(photo_list_approved(project_id=project.pk).order_by("id"))
    group_sha256 = dataset_split_keys(photos)
    entries = []
    counts: dict[str, dict[str, int]] = {label.name: {"train": 0, "holdout": 0} for label in project.labels.all()}
    for photo in photos:
        split = split_for(group_sha256[photo.pk], holdout_percent=holdout_percent)
        entries.append(
            {"photo": str(photo.public_id), "sha256": photo.sha256, "label": photo.label.name, "split": split}
        )
        counts.setdefault(photo.label.name, {"train": 0, "holdout": 0})[split] += 1
    manifest = {"project": project.slug, "holdout_percent": holdout_percent, "photos": entries}
    return manifest, counts


def dataset_snapshot_store(*, project: Project, manifest: dict, label_counts: dict) -> DatasetSnapshot:
    """The snapshot row of ``manifest`` (an identical one is reused)."""
    counts, entries = label_counts, manifest["photos"]
    digest = hashlib.sha256(dataset_manifest_bytes(manifest)).hexdigest()
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project,
        manifest_sha256=digest,
        defaults={
            "manifest": manifest,
            "label_counts": counts,
            "balance": dataset_balance(label_counts=counts),
            "photo_count": len(entries),
        },
    )
    return snapshot


def dataset_balance(*, label_counts: dict[str, dict[str, int]]) -> dict:
    """Class balance per split: smallest and largest label count and their ratio (1.0 = balanced)."""
    balance = {}
    for split in ("train", "holdout"):
        values = [counts[split] for counts in label_counts.values()] or [0]
        low, high = min(values), max(values)
        balance[split] = {"min": low, "max": high, "ratio": round(low / high, 4) if high else 0.0}
    return balance


def dataset_split_keys(photos: list[Photo]) -> dict[int, str]:
    """photo pk -> the hash that decides its split: its near-duplicate group root's sha256.

    The root is the end of the photo's ``near_duplicate_of`` chain (itself when it has none).
    It may be a photo that is not approved (or of no interest otherwise): it is loaded for its
    hash only. A cycle (never made by uploads, but possible by hand) resolves to its smallest
    pk, so every member of the cycle agrees. A photo with a ``split_key`` (imported with the
    key its source instance used) ends its chain and its key stands for its hash.
    """
    def link(parent: int | None, sha256: str, split_key: str) -> tuple[int | None, str]:
        return (None, split_key) if split_key else (parent, sha256)

    links = {p.pk: link(p.near_duplicate_of_id, p.sha256, p.split_key) for p in photos}
    missing = {parent for parent, _ in links.values() if parent is not None and parent not in links}
    while missing:
        found = Photo.objects.filter(pk__in=missing).values_list("pk", "near_duplicate_of_id", "sha256", "split_key")
        for pk, parent, sha256, split_key in found:
            links[pk] = link(parent, sha256, split_key)
        for pk in missing - set(links):  # vanished between the queries: the chain ends here
            links[pk] = (None, "")
        missing = {parent for parent, _ in links.values() if parent is not None and parent not in links}

    roots: dict[int, int] = {}
    for photo in photos:
        path = [photo.pk]
        node = photo.pk
        while True:
            if node in roots:
                root = roots[node]
                break
            parent = links[node][0]
            if parent is None or not links[parent][1]:
                root = node
                break
            if parent in path:
                root = min(path[path.index(parent) :])
                break
            path.append(parent)
            node = parent
        for pk in path:
            roots[pk] = root
    return {photo.pk: links[roots[photo.pk]][1] for photo in photos}


def dataset_snapshot_entries(snapshot: DatasetSnapshot) -> list[dict]:
    """The manifest's photos the pipeline trains on: the first of identical images (same sha256).

    Two uploads can re-encode to the same bytes; the pipeline keys its feature cache by the
    content hash, and one copy carries all the information anyway. Both copies share a split.
    """
    seen: set[str] = set()
    entries = []
    for entry in snapshot.manifest["photos"]:
        if entry["sha256"] in seen:
            continue
        seen.add(entry["sha256"])
        entries.append(entry)
    return entries
