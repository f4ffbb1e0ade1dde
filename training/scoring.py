"""Model scoring: a published version's file run on photos, one implementation for every caller.

The upload follow-ups (the model's opinion of a volunteer's photo, the "model disagrees" flag)
and the gate (the current release scored on the candidate's holdout) both read the artifact's
bytes from storage, check them against the registry's sha256, open an onnxruntime session and
predict; this module is the one place that does it. An ONNX file runs in this process
(onnxruntime, never torch); an imported ExecuTorch or TFLite release runs in its own runtime in
a fresh process (``training.ml.measure``).

Sessions are cached by the artifact's sha256 (a published artifact never changes: its sha256
names its bytes) in a small bounded cache: building one costs far more than a prediction, and a
worker only ever needs the current version of each project.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
from django.core.files.storage import default_storage
from django.utils import timezone

from submissions.models import Photo
from submissions.services import photo_followups_done, photo_model_score_save
from training.models import ModelArtifact, ModelVersion
from training.selectors import model_artifact_get_for_scoring

logger = logging.getLogger(__name__)

# A photo's follow-ups pending for longer than this: its scoring keeps failing (logged by the
# worker). It was retried at every resume tick for a day; retrying for ever would only burn the
# worker's time. The photo is still moderated as usual, just without a model score.
FOLLOWUPS_RESUME_GIVE_UP_AFTER = dt.timedelta(days=1)
# Sessions kept per process (each holds a model's weights: about 14 MB for MobileNetV2 fp32).
SESSIONS_MAX = 4


class ArtifactBytesMismatch(ValueError):
    """The stored bytes of an artifact are not the ones the registry names by sha256."""


class SessionCache:
    """A bounded, thread-safe LRU of onnxruntime sessions keyed by (artifact sha256, threads)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._sessions: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], object]) -> object:
        """The cached session for ``key``, or the one ``build()`` makes (outside the lock)."""
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
        session = build()
        with self._lock:
            self._sessions[key] = session
            while len(self._sessions) > self.maxsize:
                self._sessions.popitem(last=False)
        return session

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def clear(self) -> None:
        """Forget every session (tests; a worker never needs to)."""
        with self._lock:
            self._sessions.clear()


SESSIONS = SessionCache(SESSIONS_MAX)


@dataclasses.dataclass(frozen=True)
class PhotoScore:
    """What the model says of one photo: its probability for the claimed label, and its top answer."""

    confidence: float
    top_label: str
    top_confidence: float


def label_names(labels) -> list[str]:
    """Output index -> label name: a version's ``labels`` is a list, or a JSON object keyed by the index as text."""
    if isinstance(labels, dict):
        return [labels[key] for key in sorted(labels, key=int)]
    return list(labels)


def artifact_bytes(*, artifact: ModelArtifact) -> bytes:
    """The artifact's stored bytes, checked against the registry's sha256 (ArtifactBytesMismatch if not)."""
    with default_storage.open(artifact.file.name, "rb") as fh:
        payload = fh.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != artifact.sha256:
        raise ArtifactBytesMismatch(
            f"artifact {artifact.pk}: stored bytes have sha256 {digest[:12]}, the registry says {artifact.sha256[:12]}"
        )
    return payload


def artifact_session(*, artifact: ModelArtifact, num_threads: int | None = 1):
    """The cached onnxruntime session of an ONNX artifact; its bytes are checked against its sha256.

    One thread by default: follow-ups run next to web or training work on a small machine.
    ``num_threads`` None uses every core this process may use.
    """
    from training.ml.inference import onnx_session

    def build():
        return onnx_session(path_or_bytes=artifact_bytes(artifact=artifact), num_threads=num_threads)

    return SESSIONS.get_or_build((artifact.sha256, num_threads), build)


def photo_opener(name: str) -> Callable:
    """A callable that opens a stored photo (by storage name) as a loaded PIL image."""

    def open_image():
        from PIL import Image

        with default_storage.open(name, "rb") as fh:
            image = Image.open(fh)
            image.load()
        return image

    return open_image


def photos_run_file(*, path: Path, format: str, preprocessing: dict, photos: list[Photo], runs: int = 10):
    """Run a model file on photos in its own runtime in a fresh process (``measure.artifact_measure``).

    The photos are prepared as ``preprocessing`` (a manifest ``input``) says, laid out NHWC when it
    says so. No torch in this process. Returns the Measurement (probabilities [N, C], latency, ...).
    """
    from training.ml.config import Preprocessing
    from training.ml.images import image_to_array
    from training.ml.measure import artifact_measure

    spec = Preprocessing.from_manifest({k: v for k, v in preprocessing.items() if k != "layout"})
    if photos:
        inputs = np.stack([image_to_array(photo_opener(p.image.name)(), preprocessing=spec) for p in photos])
    else:  # nothing to score: one grey image still proves the file runs and counts its outputs
        inputs = np.zeros((1, 3, spec.input_size, spec.input_size), dtype=np.float32)
    if preprocessing.get("layout") == "NHWC":
        inputs = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1))
    return artifact_measure(path=path, format=format, inputs=inputs, threads=1, runs=runs, timeout=600)


def photos_predict(
    *, version: ModelVersion, artifact: ModelArtifact, photos: list[Photo], num_threads: int | None = 1
) -> np.ndarray:
    """Probabilities [N, C] of the artifact for the photos, columns in ``version.labels`` order.

    ONNX runs here (the cached session); an imported pte or TFLite release runs in its own
    runtime in a fresh process. The bytes are checked against the registry's sha256 either way.
    """
    from training.ml.config import Preprocessing
    from training.ml.inference import onnx_predict_images

    preprocessing = artifact.preprocessing or version.preprocessing
    if artifact.format != "onnx":
        payload = artifact_bytes(artifact=artifact)
        with tempfile.TemporaryDirectory(prefix="scoring-") as tmp:
            path = Path(tmp) / "release"
            path.write_bytes(payload)
            measured = photos_run_file(path=path, format=artifact.format, preprocessing=preprocessing,
                                       photos=photos, runs=1)
        return measured.probabilities
    return onnx_predict_images(
        path_or_bytes=artifact_session(artifact=artifact, num_threads=num_threads),
        images=[photo_opener(photo.image.name) for photo in photos],
        preprocessing=Preprocessing.from_manifest(preprocessing),
    )


def photos_predict_labels(
    *, version: ModelVersion, artifact: ModelArtifact, photos: list[Photo], num_threads: int | None = 1
) -> list[str]:
    """The label name the artifact predicts for each photo (``photos_predict``'s top class)."""
    probabilities = photos_predict(version=version, artifact=artifact, photos=photos, num_threads=num_threads)
    names = label_names(version.labels)
    return [names[i] for i in probabilities.argmax(axis=1).tolist()]


def photo_score(*, photo: Photo) -> PhotoScore | None:
    """The latest published model's opinion of one photo's claimed label, or None.

    None when there is nothing to score with: no published ONNX file for the project, or a
    model that does not know the photo's label. The newest version scores, its fp32 file first.
    """
    artifact = model_artifact_get_for_scoring(project_id=photo.project_id)
    if artifact is None:
        return None
    version = artifact.version
    labels = label_names(version.labels)
    if photo.label.name not in labels:
        return None
    (probabilities,) = photos_predict(version=version, artifact=artifact, photos=[photo])
    top = int(probabilities.argmax())
    return PhotoScore(
        confidence=float(probabilities[labels.index(photo.label.name)]),
        top_label=labels[top],
        top_confidence=float(probabilities[top]),
    )


def photo_followups_run(*, photo: Photo) -> float | None:
    """The queued follow-ups of an upload or relabel: score with the current model, mark them done.

    The score is recorded by the volunteer side (``photo_model_score_save`` sets the
    disagreement flag). Done only for the label that was scored: a relabel in between keeps
    the photo pending until its own scoring ran. Returns the confidence, or None.
    """
    score = photo_score(photo=photo)
    if score is not None:
        photo_model_score_save(
            photo=photo, confidence=score.confidence, top_label=score.top_label, top_confidence=score.top_confidence
        )
    photo_followups_done(photo=photo)
    return None if score is None else score.confidence


def photo_followups_requeue(*, older_than: dt.timedelta, enqueue: Callable[[int], object], limit: int = 500) -> int:
    """Queue again (``enqueue(photo_id)``) the scoring of photos still pending after ``older_than``.

    The broker may lose a follow-up (down during the upload, restarted empty); the
    ``followups_pending`` flag in the database does not. Younger photos are left alone:
    their task is most likely on its way. Scoring twice gives the same result, so a photo
    queued twice costs time, not correctness. An enqueue error is raised (the next run
    tries again) rather than paid once per photo. Returns how many were queued.
    """
    now = timezone.now()
    pending = (
        Photo.objects.filter(
            followups_pending=True,
            updated_at__lt=now - older_than,
            updated_at__gte=now - FOLLOWUPS_RESUME_GIVE_UP_AFTER,
        )
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    count = 0
    for photo_id in list(pending):
        enqueue(photo_id)
        # The clock restarts: a photo is queued again at most once per ``older_than``, so a
        # backlog behind a slow worker is not queued anew at every run.
        Photo.objects.filter(pk=photo_id, followups_pending=True).update(updated_at=now)
        count += 1
    if count:
        logger.info("re-queued the follow-ups of %s photo(s)", count)
    return count
