"""Model disagreement: a real (tiny) ONNX classifier scores photos' claimed labels, without torch."""
import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from submissions.models import Photo
from submissions.services import photo_followups_start
from training import scoring
from training.ml.config import Preprocessing
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun
from training.tasks import photo_score_with_current_model

pytestmark = pytest.mark.django_db

# Exactly what the pipeline writes into a version's manifest, at a tiny input size.
PREPROCESSING = Preprocessing(input_size=32, resize=32).to_manifest()
RED, BLUE = (220, 20, 20), (20, 20, 220)


def red_blue_classifier() -> bytes:
    """GlobalAveragePool -> Flatten -> Gemm -> Softmax: class 0 (ants) = red, class 1 (bees) = blue.

    Built with onnx.helper rather than exported from torch: the same kind of file the
    pipeline publishes (input "input" NCHW float32, output "probabilities"), in milliseconds.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[4.0, 0.0, -4.0], [-4.0, 0.0, 4.0]], dtype=np.float32)  # [classes, channels]
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "weight", "bias"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "red_blue",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(weights, "weight"),
            numpy_helper.from_array(np.zeros(2, dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"preprocessing": json.dumps(PREPROCESSING)})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish(project, number: int, payload: bytes) -> ModelVersion:
    """A published version whose ONNX artifact holds `payload` (registry rows as the job writes them)."""
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project, manifest_sha256="0" * 64, defaults={"manifest": {}, "label_counts": {}, "photo_count": 0}
    )
    run = TrainingRun.objects.create(project=project, night=dt.date(2026, 11, number), trigger="manual",
                                     status="succeeded")
    version = ModelVersion.objects.create(
        project=project, version=number, run=run, snapshot=snapshot, labels=["ants", "bees"],
        preprocessing=PREPROCESSING, metrics={},
    )
    name = default_storage.save(f"models/{project.slug}/v{number}/model.onnx", ContentFile(payload))
    ModelArtifact.objects.create(
        version=version, format="onnx", precision="fp32", file=name, size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(), verification={},
    )
    return version


@pytest.fixture(autouse=True)
def _fresh_sessions():
    scoring.SESSIONS.clear()
    yield
    scoring.SESSIONS.clear()


def test_the_model_agrees_with_a_red_ant_and_disagrees_with_a_blue_one(project, photo_factory):
    publish(project, 1, red_blue_classifier())
    red_ant = photo_factory(label="ants", color=RED)
    blue_ant = photo_factory(label="ants", color=BLUE)

    photo_score_with_current_model.delay(red_ant.pk)
    photo_score_with_current_model.delay(blue_ant.pk)

    red_ant.refresh_from_db()
    blue_ant.refresh_from_db()
    assert red_ant.model_confidence > 0.99 and not red_ant.flag_model_disagreement
    assert blue_ant.model_confidence < 0.01 and blue_ant.flag_model_disagreement
    # One session for both photos: cached by the artifact's sha256.
    assert len(scoring.SESSIONS.keys()) == 1


def test_the_threshold_is_a_setting(project, photo_factory, settings):
    publish(project, 1, red_blue_classifier())
    settings.PLATFORM_MODEL_DISAGREEMENT_THRESHOLD = 0.999999
    photo = photo_factory(label="bees", color=BLUE)
    confidence = photo_score_with_current_model(photo.pk)
    photo.refresh_from_db()
    assert confidence == pytest.approx(photo.model_confidence) and photo.flag_model_disagreement


def test_the_latest_published_version_scores(project, photo_factory):
    publish(project, 1, red_blue_classifier())
    publish(project, 2, red_blue_classifier().replace(b"red_blue", b"red_bluf"))  # other bytes, same maths
    photo = photo_factory(label="bees", color=BLUE)
    photo_score_with_current_model(photo.pk)
    latest = ModelArtifact.objects.get(version__version=2)
    assert scoring.SESSIONS.keys() == [(latest.sha256, 1)]


def test_without_a_published_model_nothing_is_scored(project, photo_factory):
    photo = photo_factory()
    assert photo_score_with_current_model(photo.pk) is None
    photo.refresh_from_db()
    assert photo.model_confidence is None and not photo.flag_model_disagreement
    assert photo_score_with_current_model(10**9) is None  # a deleted photo is skipped


def test_tampered_artifact_bytes_are_refused(project, photo_factory):
    version = publish(project, 1, red_blue_classifier())
    ModelArtifact.objects.filter(version=version).update(sha256="f" * 64)
    with pytest.raises(ValueError, match="sha256"):
        photo_score_with_current_model(photo_factory().pk)
    assert Photo.objects.get().model_confidence is None


def test_followups_flag_volume_and_score(project, photo_factory, settings):
    publish(project, 1, red_blue_classifier())
    settings.PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR = 1
    photo_factory(label="ants", color=RED)
    photo = photo_factory(label="ants", color=BLUE)

    photo_followups_start(photo=photo)

    photo.refresh_from_db()
    assert photo.flag_suspicious_volume and photo.flag_model_disagreement


def test_scoring_never_imports_torch():
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, django; django.setup(); import training.tasks, training.scoring, submissions.moderation, "
        "training.ml.inference, training.ml.images, training.ml.config; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": f"{root}:{root / 'platform'}", "DJANGO_SETTINGS_MODULE": "config.settings",
             "DJANGO_DEBUG": "1", "PLATFORM_ENV_FILE": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
