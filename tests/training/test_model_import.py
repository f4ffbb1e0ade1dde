"""Importing models trained elsewhere: each format on tiny models, every refusal, provenance, the gate."""
from __future__ import annotations

import io
import json

import pytest

from tests.training.conftest import colour_classifier
from training.imports import ImportRequest, model_version_import
from training.models import ModelArtifact, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def test_onnx_with_metadata_is_published_with_holdout_accuracy(colour_photos, staff):
    payload = colour_classifier(["ants", "bees"])
    version = model_version_import(
        project=colour_photos, file=io.BytesIO(payload), filename="colours.onnx",
        request=ImportRequest(labels=["ants", "bees"]), user=staff,
    )
    print(json.dumps(version.model_card, indent=1))
    assert version.source == "imported"
