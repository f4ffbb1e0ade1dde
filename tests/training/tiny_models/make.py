"""Make the tiny model files the import tests upload, with each format's own tooling.

They stand for models "trained elsewhere": every one is the colour classifier of
tests/training/conftest.py (mean colour of an 8x8 RGB input -> red ants, blue bees), so an
import scored on the red and blue test photos is right on every photo, and wrong when the
platform feeds it the wrong layout or normalisation. Run from the repository root with a venv
holding torch, executorch, litert-torch and coremltools (e.g. /work/venv17):

    PYTHONPATH=. python tests/training/tiny_models/make.py

Files (a few KB each, committed so the tests need no converter and run in seconds):
colours.pte (ExecuTorch, XNNPACK), colours.tflite (litert-torch, NCHW), colours-nhwc-labels.tflite
(NHWC input, a labels.txt packed as TFLite metadata writers pack associated files: a zip appended
to the flatbuffer), colours.mlmodel (Core ML NeuralNetwork classifier with ImageType scale/bias)
and colours.mlpackage.zip (Core ML ML Program classifier, zipped).
"""
from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LABELS = ["ants", "bees"]
WEIGHTS = [[4.0, -2.0, -2.0], [-2.0, -2.0, 4.0]]  # as colour_classifier: rows = labels, columns = R, G, B
SIZE = 8


class Colours(torch.nn.Module):
    def __init__(self, *, nhwc: bool = False, softmax: bool = True):
        super().__init__()
        self.nhwc, self.softmax = nhwc, softmax
        self.head = torch.nn.Linear(3, len(LABELS))
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(WEIGHTS))
            self.head.bias.zero_()

    def forward(self, x):
        pooled = x.mean((1, 2)) if self.nhwc else x.mean((2, 3))
        logits = self.head(pooled)
        return torch.softmax(logits, dim=1) if self.softmax else logits


def make_pte() -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(Colours().eval(), (torch.rand(1, 3, SIZE, SIZE),))
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    (HERE / "colours.pte").write_bytes(program.buffer)


def make_tflite() -> None:
    import litert_torch

    litert_torch.convert(Colours().eval(), (torch.rand(1, 3, SIZE, SIZE),)).export(str(HERE / "colours.tflite"))
    nhwc = HERE / "colours-nhwc-labels.tflite"
    litert_torch.convert(Colours(nhwc=True).eval(), (torch.rand(1, SIZE, SIZE, 3),)).export(str(nhwc))
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("labels.txt", "\n".join(LABELS) + "\n")
    nhwc.write_bytes(nhwc.read_bytes() + packed.getvalue())


def make_coreml() -> None:
    import coremltools as ct

    # Core ML computes pixel * scale + bias on 0..255: mean 0.5, std 0.5 -> scale 1/127.5, bias -1.
    image = ct.ImageType(name="image", shape=(1, 3, SIZE, SIZE), scale=1 / 127.5, bias=[-1.0, -1.0, -1.0])
    example = torch.rand(1, 3, SIZE, SIZE)
    traced = torch.jit.trace(Colours().eval(), example)
    # A ClassifierConfig is filled in by the conversion that uses it: one each.
    model = ct.convert(traced, inputs=[image], classifier_config=ct.ClassifierConfig(LABELS),
                       convert_to="neuralnetwork")
    model.save(str(HERE / "colours.mlmodel"))
    exported = torch.export.export(Colours().eval(), (example,)).run_decompositions({})
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "colours.mlpackage"
        model = ct.convert(exported, inputs=[image], classifier_config=ct.ClassifierConfig(LABELS),
                           convert_to="mlprogram")
        model.save(str(package))
        archive = HERE / "colours.mlpackage"
        shutil.make_archive(str(archive), "zip", root_dir=tmp, base_dir="colours.mlpackage")


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["pte", "tflite", "coreml"]:
        globals()[f"make_{name}"]()
    for path in sorted(HERE.iterdir()):
        if path.suffix != ".py":
            print(f"{path.name}: {path.stat().st_size} bytes")
