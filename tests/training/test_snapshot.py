"""Snapshots: byte-identical manifests, hash-stable splits, near-duplicate groups kept together, balance."""
import hashlib

import pytest

from submissions.models import Photo
from tests.training.conftest import make_photo
from training.ml.pipeline import split_for
from training.models import DatasetSnapshot
from training.snapshots import dataset_manifest_bytes, dataset_snapshot_create

pytestmark = pytest.mark.django_db


def _sha_in(split: str, *, holdout_percent: int = 20, start: int = 0) -> str:
    """A content hash that split_for puts in `split`."""
    for i in range(start, start + 1000):
        digest = hashlib.sha256(f"photo-{i}".encode()).hexdigest()
        if split_for(digest, holdout_percent=holdout_percent) == split:
            return digest
    raise AssertionError("no hash found")


def test_the_same_photos_rebuild_a_byte_identical_manifest(colour_photos):
    first = dataset_snapshot_create(project=colour_photos)
    stored = dataset_manifest_bytes(first.manifest)
    assert hashlib.sha256(stored).hexdigest() == first.manifest_sha256

    DatasetSnapshot.objects.all().delete()
    rebuilt = dataset_snapshot_create(project=colour_photos)

    assert dataset_manifest_bytes(rebuilt.manifest) == stored
    assert rebuilt.manifest_sha256 == first.manifest_sha256
    assert set(rebuilt.manifest["photos"][0]) == {"photo", "sha256", "label", "split"}


def test_near_duplicates_take_the_split_of_their_group_root(project):
    holdout_sha = _sha_in("holdout")
    root = make_photo(project=project, label="ants", sha256=holdout_sha, status=Photo.Status.REJECTED)
    child = make_photo(project=project, label="ants", sha256=_sha_in("train", start=0), near_duplicate_of=root)
    grandchild = make_photo(project=project, label="bees", sha256=_sha_in("train", start=500), near_duplicate_of=child)
    loner = make_photo(project=project, label="bees", sha256=_sha_in("train", start=700))

    snapshot = dataset_snapshot_create(project=project)

    splits = {entry["sha256"]: entry["split"] for entry in snapshot.manifest["photos"]}
    # The rejected root is not in the manifest, but its hash decides its whole group's split.
    assert root.sha256 not in splits
    assert splits[child.sha256] == splits[grandchild.sha256] == "holdout"
    assert splits[loner.sha256] == "train"
    # Each entry still names the photo's own hash.
    assert {e["sha256"] for e in snapshot.manifest["photos"]} == {child.sha256, grandchild.sha256, loner.sha256}


def test_a_near_duplicate_cycle_still_lands_in_one_split(project):
    a = make_photo(project=project, label="ants", sha256=_sha_in("train"))
    b = make_photo(project=project, label="ants", sha256=_sha_in("holdout"), near_duplicate_of=a)
    Photo.objects.filter(pk=a.pk).update(near_duplicate_of=b)  # only by hand, but must not hang

    snapshot = dataset_snapshot_create(project=project)

    assert len({entry["split"] for entry in snapshot.manifest["photos"]}) == 1


def test_class_balance_is_recorded_per_split(colour_photos):
    make_photo(project=colour_photos, label="ants")  # one more ant: unbalanced somewhere
    snapshot = dataset_snapshot_create(project=colour_photos)

    for split in ("train", "holdout"):
        values = [counts[split] for counts in snapshot.label_counts.values()]
        figure = snapshot.balance[split]
        assert figure["min"] == min(values) and figure["max"] == max(values)
        assert figure["ratio"] == pytest.approx(min(values) / max(values), abs=1e-4)
