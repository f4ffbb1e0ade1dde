"""ONNX export: one self-contained file, dynamic batch, parity with torch, metadata, checks."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
import torchvision

from training.ml.config import ParityTolerance, Preprocessing
from training.ml.errors import VerificationError
from training.ml.export import classifier_assemble, file_sha256, onnx_export, onnx_predict
from training.ml.inference import onnx_metadata, onnx_preprocessing, onnx_session
from training.ml.parity import onnx_verify, predictions_compare

LABELS = ("ant", "bee", "wasp")
PRE = Preprocessing()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The real architecture with a random 3-class head, exported once (the export takes ~12 s)."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None)
    net.classifier = torch.nn.Identity()
    net.eval().to(memory_format=torch.channels_last)  # as left by features_extract
    head = torch.nn.Linear(1280, len(LABELS))
    model = classifier_assemble(backbone=net, head=head)
    folder = tmp_path_factory.mktemp("export")
    started = time.perf_counter()
    path = onnx_export(model=model, path=folder / "model.onnx", preprocessing=PRE, labels=LABELS)
    seconds = time.perf_counter() - started
    print(f"\nonnx_export: {seconds:.1f} s, {path.stat().st_size} bytes")
    return {"model": model, "path": path, "seconds": seconds, "backbone": net, "head": head}


def test_export_is_one_self_contained_file(exported, tmp_path):
    path = exported["path"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .onnx.data, no temp files
    assert 8_000_000 < path.stat().st_size < 12_000_000
    # Alone in a fresh folder and from bytes: nothing else is needed to run it.
    alone = tmp_path / "copy.onnx"
    shutil.copyfile(path, alone)
    for sidecar in tmp_path.glob("*.data"):
        sidecar.unlink()
    session = onnx_session(path_or_bytes=alone.read_bytes())
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    assert session.get_inputs()[0].shape[1:] == [3, 224, 224]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic: dynamic batch
    assert file_sha256(alone) == file_sha256(path)


def test_onnx_matches_torch_on_random_inputs_for_several_batch_sizes(exported):
    session = onnx_session(path_or_bytes=exported["path"])
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 2, 5):
        x = torch.randn(batch, 3, 224, 224, generator=generator).clamp(-1, 1)
        with torch.inference_mode():
            expected = exported["model"](x).numpy()
        got = onnx_predict(path_or_bytes=session, batch=x.numpy())
        assert got.shape == (batch, len(LABELS))
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
        report = predictions_compare(reference=expected, candidate=got, tolerance=ParityTolerance(max_abs_diff=1e-4))
        assert report.ok, report.failures
        assert report.top1_agreement == 1.0


def test_metadata_describes_the_input(exported):
    meta = onnx_metadata(path_or_bytes=exported["path"])
    assert json.loads(meta["labels"]) == list(LABELS)
    assert json.loads(meta["preprocessing"]) == PRE.to_manifest()
    assert onnx_preprocessing(path_or_bytes=exported["path"].read_bytes()) == PRE


def test_assembly_leaves_inputs_alone_and_uses_torchvision_layout(exported):
    net, head = exported["backbone"], exported["head"]
    assert isinstance(net.classifier, torch.nn.Identity)  # the caller's backbone is untouched
    state = exported["model"].net.state_dict()
    plain = torchvision.models.mobilenet_v2(weights=None, num_classes=len(LABELS))
    plain.load_state_dict(state)  # strict: standard torchvision keys
    assert torch.equal(state["classifier.1.weight"], head.weight)
    assert not exported["model"].training


def test_verify_refuses_a_file_that_claims_other_preprocessing(exported):
    images = [lambda: __import__("PIL.Image", fromlist=["Image"]).new("RGB", (256, 256))]
    with pytest.raises(VerificationError, match="embedded preprocessing"):
        onnx_verify(
            path_or_bytes=exported["path"],
            images=images,
            reference=np.full((1, 3), 1 / 3, dtype=np.float32),
            preprocessing=Preprocessing(resize=224),
        )


def test_broken_files_fail_to_load_with_a_clear_error(exported, tmp_path):
    with pytest.raises(VerificationError, match="cannot load"):
        onnx_session(path_or_bytes=b"definitely not onnx")
    truncated = exported["path"].read_bytes()[:100_000]
    with pytest.raises(VerificationError, match="cannot load"):
        onnx_session(path_or_bytes=truncated)


def test_predictions_compare_flags_flips_and_drift():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    same = predictions_compare(reference=reference, candidate=reference.copy(), y_true=[0, 1, 1])
    assert same.ok and same.top1_agreement == 1.0 and same.max_abs_diff == 0.0
    assert same.accuracy == pytest.approx(2 / 3) and same.reference_accuracy == pytest.approx(2 / 3)
    flipped = predictions_compare(reference=reference, candidate=reference[:, ::-1])
    assert not flipped.ok and flipped.disagreements == (0, 1, 2)
    assert any("agreement" in f for f in flipped.failures)
    drift = predictions_compare(reference=reference, candidate=reference + [[-0.05, 0.05]] * 3)
    assert drift.top1_agreement == 1.0 and not drift.ok  # same answers, moved probabilities
    assert any("probability difference" in f for f in drift.failures)
    nan = predictions_compare(reference=reference, candidate=np.full_like(reference, np.nan))
    assert not nan.ok
    assert json.loads(json.dumps(nan.to_dict(), allow_nan=False))["max_abs_diff"] is None
    json.dumps(drift.to_dict(), allow_nan=False)
    with pytest.raises(VerificationError, match="shape"):
        predictions_compare(reference=reference, candidate=reference[:2])


def test_a_new_head_swapped_into_an_earlier_export_matches_a_full_export(exported, tmp_path):
    """A linear probe's next night reuses the traced backbone: same outputs, no re-trace."""
    from training.ml.errors import ExportError
    from training.ml.export import onnx_export_with_head

    torch.manual_seed(1)
    new_head = torch.nn.Linear(1280, len(LABELS))
    template = exported["path"].read_bytes()
    started = time.perf_counter()
    path = onnx_export_with_head(
        template=template, head=new_head, path=tmp_path / "swapped.onnx", preprocessing=PRE, labels=("a", "b", "c")
    )
    assert time.perf_counter() - started < exported["seconds"] / 3  # no tracing

    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = classifier_assemble(backbone=exported["backbone"], head=new_head)(images).numpy()
        old = exported["model"](images).numpy()
    got = onnx_predict(path_or_bytes=path, batch=images.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(got - old).max() > 1e-3  # the new head, not the template's
    assert json.loads(onnx_metadata(path_or_bytes=path)["labels"]) == ["a", "b", "c"]

    with pytest.raises(ExportError, match="shape"):
        onnx_export_with_head(template=template, head=torch.nn.Linear(1280, 5), path=tmp_path / "x.onnx",
                              preprocessing=PRE)
    assert not (tmp_path / "x.onnx").exists()
