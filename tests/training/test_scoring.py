"""training.scoring: the one place that reads a release's file, checks its sha256 and runs it on photos."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from submissions.models import Photo
from tests.training.conftest import PREPROCESSING, make_photo, release
from training import scoring
from training.models import ModelArtifact

pytestmark = pytest.mark.django_db
TINY = Path(__file__).resolve().parent / "tiny_models"


@pytest.fixture(autouse=True)
def _fresh_sessions():
    scoring.SESSIONS.clear()
    yield
    scoring.SESSIONS.clear()


def _photos(project) -> list[Photo]:
    return [make_photo(project=project, label=label) for label in ("ants", "bees", "bees", "ants")]


def test_an_onnx_release_predicts_the_photos_and_keeps_one_session_per_threads(project):
    version = release(project, labels=["ants", "bees"])
    artifact = version.artifacts.get()
    photos = _photos(project)

    labels = scoring.photos_predict_labels(version=version, artifact=artifact, photos=photos, num_threads=None)
    again = scoring.photos_predict_labels(version=version, artifact=artifact, photos=photos[:1], num_threads=None)

    assert labels == ["ants", "bees", "bees", "ants"] and again == ["ants"]
    assert scoring.SESSIONS.keys() == [(artifact.sha256, None)]  # built once, reused


def test_an_imported_pte_release_runs_in_its_own_runtime(project):
    version = release(project, labels=["ants", "bees"])
    payload = (TINY / "colours.pte").read_bytes()
    # The colour classifier as an ExecuTorch file, fed [-1, 1] inputs like the import records it.
    preprocessing = {**PREPROCESSING.to_manifest(), "mean": [0.5] * 3, "std": [0.5] * 3, "layout": "NCHW"}
    artifact = ModelArtifact.objects.create(
        version=version, format="pte", precision="fp32", variant="imported",
        file=default_storage.save(f"models/{project.slug}/v1/model.pte", ContentFile(payload)),
        size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), verification={}, preprocessing=preprocessing,
    )

    labels = scoring.photos_predict_labels(version=version, artifact=artifact, photos=_photos(project))

    assert labels == ["ants", "bees", "bees", "ants"]
    assert scoring.SESSIONS.keys() == []  # a fresh process, nothing kept here


def test_stored_bytes_that_are_not_the_registrys_are_refused_and_nothing_is_cached(project):
    version = release(project, labels=["ants", "bees"])
    ModelArtifact.objects.filter(version=version).update(sha256="f" * 64)
    artifact = version.artifacts.get()

    with pytest.raises(scoring.ArtifactBytesMismatch, match="registry says ffffffffffff"):
        scoring.photos_predict(version=version, artifact=artifact, photos=_photos(project))
    assert scoring.SESSIONS.keys() == []


def test_the_session_cache_is_bounded_and_keeps_the_recently_used():
    cache = scoring.SessionCache(maxsize=2)
    built = []

    def build(name):
        built.append(name)
        return name

    cache.get_or_build("a", lambda: build("a"))
    cache.get_or_build("b", lambda: build("b"))
    cache.get_or_build("a", lambda: build("a"))  # used again: "b" is now the oldest
    cache.get_or_build("c", lambda: build("c"))

    assert cache.keys() == ["a", "c"] and built == ["a", "b", "c"]
    assert scoring.SESSIONS_MAX == scoring.SESSIONS.maxsize


def test_label_names_reads_lists_and_index_keyed_objects():
    assert scoring.label_names(["ants", "bees"]) == ["ants", "bees"]
    assert scoring.label_names({"10": "wasps", "2": "bees", "0": "ants"}) == ["ants", "bees", "wasps"]
