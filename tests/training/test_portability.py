"""Data portability: export the approved data set, import it elsewhere, get the same snapshot."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from challenges.models import Project
from common.errors import DomainError
from submissions.models import Photo
from submissions.services import photo_create, photo_moderate
from tests.conftest import ROOT
from tests.factories import UserFactory
from training.ml.pipeline import split_for
from training.portability import MANIFEST_NAME, dataset_export, dataset_import
from training.snapshots import dataset_snapshot_create

pytestmark = pytest.mark.django_db


def _noise_png(seed: int, *, nudge: int = 0) -> bytes:
    """A 64x48 picture of its own (distinct perceptual hash); `nudge` makes a near copy."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pixels = np.clip(pixels.astype(int) + nudge, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _upload(project, label: str, data: bytes) -> Photo:
    return photo_create(project=project, label_name=label, upload=io.BytesIO(data), size=len(data), volunteer=None)


def _near_copy_in_other_split(project) -> tuple[Photo, Photo]:
    """A photo and its near copy whose own hashes fall into different splits."""
    for seed in range(100, 200):
        root = _upload(project, "ants", _noise_png(seed))
        child = _upload(project, "ants", _noise_png(seed, nudge=2))
        if child.near_duplicate_of_id == root.pk and split_for(root.sha256) != split_for(child.sha256):
            return root, child
        for photo in (child, root):
            photo.delete()
    raise AssertionError("no near copy landing in the other split")


@pytest.fixture
def source(project, staff):
    """Project A: approved photos, one pending and one rejected, and an approved near copy of a
    pending photo (its split comes from the pending root's hash, which is not exported)."""
    approved = [_upload(project, "ants" if i % 2 else "bees", _noise_png(i)) for i in range(8)]
    pending = _upload(project, "bees", _noise_png(50))
    rejected = _upload(project, "ants", _noise_png(51))
    root, child = _near_copy_in_other_split(project)
    for photo in [*approved, child]:
        photo_moderate(photo=photo, moderator=staff, approve=True)
    photo_moderate(photo=rejected, moderator=staff, approve=False, reason="blurry")
    Photo.objects.filter(project=project).update(volunteer=UserFactory(username="alice", email="alice@example.org"))
    return {"approved": [*approved, child], "not_exported": [pending, rejected, root], "near_copy": (root, child)}


def _members(export: Path) -> dict[str, bytes]:
    if export.is_dir():
        return {p.relative_to(export).as_posix(): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    with zipfile.ZipFile(export) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("name", ["export.zip", "export"])
def test_export_holds_the_approved_photos_with_their_hashes_and_the_snapshot_splits(project, source, tmp_path, name):
    result = dataset_export(project=project, out=tmp_path / name)

    files = _members(result.path)
    manifest = json.loads(files.pop(MANIFEST_NAME))
    snapshot = dataset_snapshot_create(project=project)
    assert result.manifest_sha256 == manifest["snapshot"]["manifest_sha256"] == snapshot.manifest_sha256
    entries = manifest["photos"]
    assert {e["photo"] for e in entries} == {str(p.public_id) for p in source["approved"]}
    assert set(files) == {e["path"] for e in entries}
    for entry in entries:
        stored = Photo.objects.get(public_id=entry["photo"])
        # The stored copy's own format: .png for small or lossless sources (issue 16), else .jpg.
        assert entry["path"] == f"{stored.label.name}/{stored.sha256}{Path(stored.image.name).suffix}"
        assert hashlib.sha256(files[entry["path"]]).hexdigest() == entry["sha256"] == stored.sha256
        assert (entry["width"], entry["height"]) == (stored.width, stored.height)
    assert {e["photo"]: e["split"] for e in entries} == {e["photo"]: e["split"] for e in snapshot.manifest["photos"]}
    root, child = source["near_copy"]
    child_entry = next(e for e in entries if e["photo"] == str(child.public_id))
    assert child_entry["split"] == split_for(root.sha256) != split_for(child.sha256)
    assert [label["name"] for label in manifest["project"]["labels"]] == ["ants", "bees"]
    # Volunteers stay on the instance they trusted.
    text = json.dumps(manifest)
    assert "alice" not in text and "@" not in text


def test_a_failed_export_leaves_nothing_behind(project, source, tmp_path):
    from django.core.files.storage import default_storage

    default_storage.delete(source["approved"][-1].image.name)  # the last photo cannot be read
    with pytest.raises(FileNotFoundError):
        dataset_export(project=project, out=tmp_path / "out" / "export.zip")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_another_instance_imports_the_same_data_set(project, source, tmp_path):
    """A second instance (own SQLite database and media folder, a separate process) imports the
    zip twice and builds a snapshot: same photos, bytes, labels and splits, same manifest hash."""
    export = dataset_export(project=project, out=tmp_path / "export.zip")
    other = tmp_path / "other"
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": "platform:.",
        "PLATFORM_ENV_FILE": "", "PLATFORM_VAR_DIR": str(other), "DJANGO_SECRET_KEY": "another-instance",
        "DATABASE_URL": f"sqlite:///{other / 'db.sqlite3'}",
    }
    script = textwrap.dedent(f"""
        import io, json, django
        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from submissions.models import Photo
        from training.snapshots import dataset_snapshot_create
        call_command("migrate", verbosity=0)
        get_user_model().objects.create_user("moderator", is_staff=True)
        runs = []
        for _ in range(2):
            out = io.StringIO()
            call_command("dataset_import", {str(export.path)!r}, stdout=out, stderr=io.StringIO())
            runs.append(out.getvalue())
        snapshot = dataset_snapshot_create(project=Photo.objects.first().project)
        files = {{str(p.public_id): p.image.read().hex() for p in Photo.objects.all()}}
        print(json.dumps({{"runs": runs, "manifest": snapshot.manifest, "sha256": snapshot.manifest_sha256,
                          "labels": sorted(snapshot.project.labels.values_list("name", flat=True)),
                          "files": files}}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", "import os, sys; sys.path[:0] = ['platform', '.'];"
         "os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'\n" + script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])

    n = len(source["approved"])
    assert f"{n} imported, 0 already there, 0 refused." in imported["runs"][0]
    assert "Same data set as the export" in imported["runs"][0]
    assert f"0 imported, {n} already there, 0 refused." in imported["runs"][1]
    here = dataset_snapshot_create(project=project)
    assert imported["sha256"] == here.manifest_sha256
    assert imported["manifest"] == here.manifest  # same ids, sha256, labels and splits, in order
    assert imported["labels"] == ["ants", "bees"]
    for photo in source["approved"]:
        assert bytes.fromhex(imported["files"][str(photo.public_id)]) == photo.image.read()


def test_reimporting_where_it_came_from_adds_nothing(project, source, tmp_path, staff):
    out = io.StringIO()
    call_command("dataset_export", "ants-bees", str(tmp_path / "export"), stdout=out, stderr=io.StringIO())
    assert f"{len(source['approved'])} photos written to {tmp_path / 'export'}" in out.getvalue()
    before = Photo.objects.count()

    result = dataset_import(source=tmp_path / "export", moderator=staff)

    assert (result.imported, result.duplicate, result.refused) == (0, len(source["approved"]), {})
    assert result.same_dataset and Photo.objects.count() == before


@pytest.fixture
def refused_import(project, source, tmp_path, staff, media_files):
    """Run an import expected to be refused; prove nothing was stored."""
    def run(export: Path, **kwargs) -> DomainError:
        rows, files, projects = Photo.objects.count(), media_files(), Project.objects.count()
        with pytest.raises(DomainError) as refused:
            dataset_import(source=export, moderator=staff, **kwargs)
        assert (Photo.objects.count(), media_files(), Project.objects.count()) == (rows, files, projects)
        return refused.value

    return run


def test_a_tampered_file_refuses_the_whole_import(project, tmp_path, refused_import):
    export = dataset_export(project=project, out=tmp_path / "export").path
    manifest = json.loads((export / MANIFEST_NAME).read_text())
    victim = manifest["photos"][-1]["path"]
    (export / victim).write_bytes((export / victim).read_bytes()[:-10] + b"\0" * 10)

    error = refused_import(export, project_slug="copy")

    assert error.code == "export_tampered" and victim in error.message


@pytest.mark.parametrize("bad", ["../escape.jpg", "/etc/passwd", "symlink"])
def test_a_path_leaving_the_archive_refuses_the_import(project, tmp_path, refused_import, bad):
    export = dataset_export(project=project, out=tmp_path / "export.zip").path
    with zipfile.ZipFile(export, "a") as archive:
        if bad == "symlink":
            link = zipfile.ZipInfo("ants/link.jpg")
            link.external_attr = 0o120777 << 16  # a symbolic link to /etc/passwd, as zip -y stores it
            archive.writestr(link, "/etc/passwd")
        else:
            archive.writestr(bad, b"\xff\xd8")

    error = refused_import(export, project_slug="copy")

    assert error.code == "export_path_escape"
    assert (bad if bad != "symlink" else "ants/link.jpg") in error.message


def test_a_manifest_path_leaving_the_folder_refuses_the_import(project, tmp_path, refused_import):
    export = dataset_export(project=project, out=tmp_path / "export").path
    manifest = json.loads((export / MANIFEST_NAME).read_text())
    entry = manifest["photos"][0]
    (tmp_path / "outside.jpg").write_bytes((export / entry["path"]).read_bytes())
    entry["path"] = "ants/../../outside.jpg"
    (export / MANIFEST_NAME).write_text(json.dumps(manifest))

    error = refused_import(export, project_slug="copy")

    assert error.code == "export_path_escape" and "outside.jpg" in error.message


def test_labels_must_match_an_existing_project(project, tmp_path, refused_import):
    export = dataset_export(project=project, out=tmp_path / "export").path
    other = Project.objects.create(slug="wasps", title="Wasps")
    other.labels.create(name="ants")
    other.labels.create(name="wasps")

    error = refused_import(export, project_slug="wasps")

    assert error.code == "labels_differ" and "wasps" in error.message and "bees" in error.message


def test_a_file_that_is_not_a_clean_stored_copy_goes_through_the_pipeline_and_is_refused(project, source, tmp_path, staff):
    """A hand-made export whose hashes match but whose file carries metadata: the pipeline refuses it."""
    export = dataset_export(project=project, out=tmp_path / "export").path
    manifest = json.loads((export / MANIFEST_NAME).read_text())
    entry = manifest["photos"][0]
    with_comment = io.BytesIO()
    Image.open(export / entry["path"]).save(with_comment, format="JPEG", comment=b"GPS 48.85N 2.35E")
    (export / entry["path"]).write_bytes(with_comment.getvalue())
    entry["sha256"] = hashlib.sha256(with_comment.getvalue()).hexdigest()
    (export / MANIFEST_NAME).write_text(json.dumps(manifest))
    Photo.objects.filter(public_id=entry["photo"]).delete()  # so the photo is new here

    result = dataset_import(source=export, moderator=staff)

    assert result.imported == 0 and entry["path"] in result.refused
    assert not Photo.objects.filter(public_id=entry["photo"]).exists()


def test_staff_download_the_export_from_the_admin(project, source, admin_client):
    response = admin_client.post(
        "/admin/challenges/project/", {"action": "export_dataset", "_selected_action": [project.pk]}
    )

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="ants-bees-dataset.zip"'
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        manifest = json.loads(archive.read(MANIFEST_NAME))
        assert {e["photo"] for e in manifest["photos"]} == {str(p.public_id) for p in source["approved"]}
        for entry in manifest["photos"]:
            assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
