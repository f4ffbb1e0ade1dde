"""Models trained elsewhere: verify an uploaded file and publish it as the next immutable version.

One service, ``model_version_import``, behind three doors (the admin form, the staff API and
``manage.py model_import``). It checks before it stores anything: the size limit, the format
(from the bytes), that the file loads in its runtime (a child process: the web process never
imports torch or a phone runtime), that its output size equals the number of labels and its
input the preprocessing's input size. When the project has approved holdout photos of the
model's labels, the file runs on them (a fresh process, as every exported file is measured)
and the card shows its accuracy with n and a 95% interval. Every refusal is a DomainError
(4xx, a JSON error naming the problem) raised before any row or object exists. An accepted
file goes through ``model_version_publish`` (number under a row lock, stored bytes read back
by sha256, removal on failure), so channels, rollouts, deltas and history follow as for a
trained version.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from challenges.models import Project
from challenges.selectors import project_today
from common.errors import PayloadTooLarge, UnprocessableEntity, UnsupportedMediaType, ValidationFailed
from submissions.models import Photo
from training.ml.card import CARD_SCHEMA, OFFERED
from training.ml.config import Preprocessing
from training.ml.errors import VerificationError
from training.ml.formats import STRUCTURE_ONLY, mlpackage_unzip
from training.ml.model_import import (
    MLPACKAGE_MAX_UNPACKED,
    ModelFacts,
    UnknownFormat,
    format_detect,
    import_format_spec,
    model_inspect,
)
from training.ml.stats import proportion
from training.models import ModelVersion, TrainingRun
from training.publishing import model_version_publish
from training.scoring import photos_run_file
from training.snapshots import dataset_snapshot_entries, dataset_snapshot_manifest, dataset_snapshot_store

logger = logging.getLogger(__name__)

LABELS_MAX = 10_000
_CHUNK = 1 << 20


class ModelRefused(UnprocessableEntity):
    """The file is a model, but not one this project can publish (422)."""


@dataclass(frozen=True)
class ImportRequest:
    """What staff said about the file; the file's own metadata wins where it has any."""

    labels: list[str] | None = None
    input_size: int | None = None
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass
class _Artifact:
    """The imported file, shaped like a compression artifact for ``model_version_publish``."""

    path: Path
    format: str
    variant: str
    precision: str
    size: int
    sha256: str
    preprocessing: dict
    measurements: dict
    extension: str
    recommended: bool = True
    companions: list = field(default_factory=list)


@dataclass
class _Result:
    labels: list[str]
    preprocessing: object  # has to_manifest()
    metrics: object  # has to_dict()


@dataclass
class _Compression:
    card: dict
    artifacts: list


class _Fixed:
    """A value with the ``to_manifest``/``to_dict`` method publishing calls."""

    def __init__(self, value: dict):
        self.value = value

    def to_manifest(self) -> dict:
        return dict(self.value)

    to_dict = to_manifest


def labels_parse(value) -> list[str]:
    """Label names in output order from a JSON list, one name per line, or comma-separated text."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    text = str(value).strip()
    if text.startswith("["):
        parsed = json.loads(text)  # ValueError names the problem
        return [str(v).strip() for v in parsed] if isinstance(parsed, list) else [str(parsed)]
    separator = "\n" if "\n" in text else ","
    return [v.strip() for v in text.split(separator) if v.strip()]


def triple_parse(value) -> tuple[float, float, float]:
    """Per-channel (R, G, B) numbers from "0.5,0.5,0.5", a JSON list, or one number for all three."""
    items = value if isinstance(value, (list, tuple)) else str(value).strip().strip("[]").split(",")
    values = tuple(float(v) for v in items)  # ValueError for anything else
    if not all(math.isfinite(v) for v in values):
        raise ValueError("finite numbers")
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError("three numbers (R, G, B) or one for all channels")
    return values


def model_version_import(
    *,
    project: Project,
    file: IO[bytes],
    filename: str,
    request: ImportRequest | None = None,
    release_notes: str = "",
    user=None,
) -> ModelVersion:
    """Verify an uploaded model file and publish it as the project's next version; raise a DomainError.

    Refusals (nothing stored): 413 ``model_too_large``, 415 ``unsupported_model_format``, 422
    ``model_load_failed`` / ``model_output_mismatch`` / ``model_input_mismatch`` /
    ``labels_conflict`` / ``preprocessing_conflict``, 400 ``labels_required`` /
    ``preprocessing_required`` / ``invalid_labels`` / ``invalid_preprocessing``.
    """
    request = request or ImportRequest()
    with tempfile.TemporaryDirectory(prefix="model-import-") as tmp:
        tmp_path = Path(tmp)
        upload = tmp_path / "upload"
        size, sha256 = _receive(file=file, into=upload)
        with open(upload, "rb") as fh:
            head = fh.read(16)
        try:
            fmt = format_detect(head, filename=filename or "")
        except UnknownFormat as exc:
            raise UnsupportedMediaType(str(exc), code="unsupported_model_format") from None
        spec = import_format_spec(fmt)
        model_path = upload
        if fmt == "mlpackage":
            model_path = _unzip_package(upload=upload, into=tmp_path / "package")
        try:
            facts = model_inspect(path=model_path, format=fmt)
        except VerificationError as exc:
            raise ModelRefused(str(exc), code="model_load_failed") from None

        labels = _labels(facts=facts, request=request)
        preprocessing = _preprocessing(facts=facts, request=request)
        if facts.output_size is not None and facts.output_size != len(labels):
            raise ModelRefused(
                f"The model has {facts.output_size} outputs but {len(labels)} labels were given "
                f"({', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}).",
                code="model_output_mismatch", extra={"outputs": facts.output_size, "labels": len(labels)},
            )
        if facts.output_size is None and not spec.executable_here:
            raise ModelRefused(
                "The model does not state its number of outputs and cannot be run here to find out.",
                code="model_output_mismatch",
            )

        manifest, counts = dataset_snapshot_manifest(project=project)
        evaluation = _evaluate(
            path=upload, facts=facts, labels=labels, preprocessing=preprocessing, manifest=manifest,
            executable=spec.executable_here,
        )
        entry = _input_entry(facts=facts, preprocessing=preprocessing, evaluation=evaluation)
        row = _card_row(fmt=fmt, facts=facts, size=size, sha256=sha256, entry=entry, evaluation=evaluation)
        artifact = _Artifact(
            path=upload, format=fmt, variant=facts.precision, precision=facts.precision, size=size, sha256=sha256,
            preprocessing=entry, measurements=row, extension=spec.extension,
        )
        metrics = _metrics(labels=labels, evaluation=evaluation)
        card = _card(labels=labels, row=row, evaluation=evaluation, filename=filename, sha256=sha256,
                     imported_by=user.get_username() if getattr(user, "pk", None) else None)
        with transaction.atomic():
            snapshot = dataset_snapshot_store(project=project, manifest=manifest, label_counts=counts)
            now = timezone.now()
            run = TrainingRun.objects.create(
                project=project, night=project_today(project=project), trigger=TrainingRun.Trigger.IMPORT,
                status=TrainingRun.Status.SUCCEEDED, stage="publish", progress=1.0, started_at=now,
                finished_at=now, requested_by=user if getattr(user, "pk", None) else None, snapshot=snapshot,
                metrics=metrics, model_card=card,
                config={"import": {"filename": filename, "sha256": sha256, "format": fmt, "facts": facts.to_dict()}},
            )
            version = model_version_publish(
                run=run, snapshot=snapshot, result=_Result(labels, _Fixed(entry), _Fixed(metrics)),
                compression=_Compression(card, [artifact]),
                provenance={
                    "source": ModelVersion.Source.IMPORTED,
                    "imported_by": run.requested_by,
                    "source_sha256": sha256,
                    "source_filename": (filename or "")[-255:],
                    "release_notes": release_notes or "",
                },
            )
            run.message = f"Imported {filename or 'a file'} as version {version.version}."
            run.save(update_fields=["message"])
    logger.info("model import: %s v%s from %s (%s, sha256 %s) by %s",
                project.slug, version.version, filename, fmt, sha256[:12], user)
    return version


def _receive(*, file: IO[bytes], into: Path) -> tuple[int, str]:
    """Copy the upload to ``into`` (stopping at the limit); its size and sha256."""
    limit = int(settings.PLATFORM_MODEL_IMPORT_MAX_BYTES)
    declared = getattr(file, "size", None)
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    digest, size = hashlib.sha256(), 0
    with open(into, "wb") as out:
        while chunk := file.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise UnsupportedMediaType("The file is empty.", code="unsupported_model_format")
    return size, digest.hexdigest()


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The model file is larger than the limit of {limit} bytes (PLATFORM_MODEL_IMPORT_MAX_BYTES).",
        code="model_too_large", extra={"limit": limit},
    )


def _unzip_package(*, upload: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(upload) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise ModelRefused(f"Not a readable zip archive of an .mlpackage: {exc}", code="model_load_failed") from None
    if unpacked > MLPACKAGE_MAX_UNPACKED:
        raise ModelRefused("The .mlpackage archive unpacks to more than 1 GiB.", code="model_load_failed")
    into.mkdir()
    try:
        return mlpackage_unzip(upload.read_bytes(), into)
    except VerificationError as exc:
        raise ModelRefused(str(exc), code="model_load_failed") from None


def _labels(*, facts: ModelFacts, request: ImportRequest) -> list[str]:
    given = [str(label).strip() for label in request.labels] if request.labels is not None else None
    if given is not None and (not all(given) or len(set(given)) != len(given) or len(given) > LABELS_MAX):
        raise ValidationFailed("labels: distinct, non-empty names, one per output.", code="invalid_labels",
                               extra={"fields": {"labels": "distinct, non-empty names"}})
    if facts.labels:
        if given and list(given) != list(facts.labels):
            raise ModelRefused(
                f"The file names its labels ({', '.join(facts.labels[:5])}...) and the request names others; "
                "leave labels out or give the file's.", code="labels_conflict",
            )
        return list(facts.labels)
    if not given:
        raise ValidationFailed(
            f"The {facts.format} file carries no labels: give them, one per output, in output order.",
            code="labels_required", extra={"fields": {"labels": "required for this file"}},
        )
    return given


def _preprocessing(*, facts: ModelFacts, request: ImportRequest) -> Preprocessing:
    """Input size from the file's input shape, mean/std from its metadata or the request."""
    if facts.layout not in ("NCHW", "NHWC", "image"):
        raise ModelRefused(
            f"The model's input {facts.input_name!r} has shape {list(facts.input_shape)}: an RGB image "
            "[1, 3, S, S] or [1, S, S, 3] is expected.", code="model_input_mismatch",
        )
    size = facts.input_size
    if request.input_size is not None and size is not None and request.input_size != size:
        raise ModelRefused(
            f"The request says input size {request.input_size}, the model's input {facts.input_name!r} "
            f"has shape {list(facts.input_shape)}.", code="model_input_mismatch",
            extra={"input_shape": list(facts.input_shape), "input_size": request.input_size},
        )
    size = size or request.input_size
    if size is None:
        raise ValidationFailed("The model's input size is not fixed: give input_size.", code="preprocessing_required",
                               extra={"fields": {"input_size": "required for this file"}})
    meta = facts.preprocessing or {}
    values = {}
    for key in ("mean", "std"):
        ours, theirs = meta.get(key), getattr(request, key)
        if ours is not None and theirs is not None and not np.allclose(ours, theirs, atol=1e-4):
            raise ModelRefused(f"The file's {key} is {list(ours)}, the request's {list(theirs)}.",
                               code="preprocessing_conflict")
        values[key] = ours if ours is not None else theirs
        if values[key] is None:
            raise ValidationFailed(
                f"The {facts.format} file does not say how to normalise its input: give mean and std.",
                code="preprocessing_required", extra={"fields": {key: "required for this file"}},
            )
    resize = request.resize or meta.get("resize") or round(size * 256 / 224)
    try:
        return Preprocessing(input_size=size, resize=max(int(resize), size), mean=tuple(values["mean"]),
                             std=tuple(values["std"]))
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"Invalid preprocessing: {exc}", code="invalid_preprocessing") from None


@dataclass(frozen=True)
class _Evaluation:
    executed: bool
    holdout: int  # photos of the model's labels in the holdout
    correct: int
    output: str  # "probabilities" or "scores"
    measurement: dict  # load/latency/memory of the fresh process
    note: str


def _evaluate(*, path: Path, facts: ModelFacts, labels: list[str], preprocessing: Preprocessing,
              manifest: dict, executable: bool) -> _Evaluation:
    """Run the file on the project's holdout photos of its labels (or one grey image) in a fresh process."""
    entries = [e for e in _manifest_entries_of(manifest) if e["split"] == "holdout" and e["label"] in labels]
    if not executable:
        note = f"{STRUCTURE_ONLY}: accuracy not measured ({len(entries)} holdout photos of its labels)"
        return _Evaluation(False, len(entries), 0, "probabilities", {}, note)
    photos = Photo.objects.in_bulk([uuid.UUID(e["photo"]) for e in entries], field_name="public_id")
    manifest_input = {**preprocessing.to_manifest(), "layout": facts.layout}
    try:
        measured = photos_run_file(path=path, format=facts.format, preprocessing=manifest_input,
                                   photos=[photos[uuid.UUID(e["photo"])] for e in entries])
    except VerificationError as exc:
        raise ModelRefused(f"The file loads but does not run: {exc}", code="model_load_failed") from None
    probabilities = np.asarray(measured.probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ModelRefused(
            f"The model returns {probabilities.shape[-1] if probabilities.size else 0} scores per image but "
            f"{len(labels)} labels were given.", code="model_output_mismatch",
        )
    sums = probabilities.sum(axis=1)
    output = "probabilities" if (probabilities >= -1e-6).all() and np.allclose(sums, 1.0, atol=1e-3) else "scores"
    correct = 0
    if entries:
        predicted = probabilities.argmax(axis=1)
        correct = int(sum(labels[i] == e["label"] for i, e in zip(predicted.tolist(), entries)))
    note = (f"run on {len(entries)} holdout photos of its labels" if entries
            else "no approved holdout photos of its labels: accuracy not measured")
    return _Evaluation(True, len(entries), correct, output, measured.to_dict(), note)


def _manifest_entries_of(manifest: dict) -> list[dict]:
    return dataset_snapshot_entries(SimpleNamespace(manifest=manifest))  # it reads only .manifest


def _input_entry(*, facts: ModelFacts, preprocessing: Preprocessing, evaluation: _Evaluation) -> dict:
    """The manifest's ``input`` for this file: the platform's spec plus what differs for it."""
    entry = preprocessing.to_manifest()
    entry["output"] = evaluation.output
    if facts.layout == "NHWC":
        entry["layout"] = "NHWC"
    elif facts.layout == "image":
        # A Core ML image input takes the resized, cropped RGB image; the model applies the
        # scale and bias (the mean and std above) itself.
        entry["layout"] = "image"
        entry["normalized_by_model"] = True
    if facts.input_quantization:
        scale, zero_point = facts.input_quantization
        entry["input_dtype"] = facts.input_dtype
        entry["input_quantization"] = {"scale": scale, "zero_point": zero_point}
    return entry


def _accuracy(evaluation: _Evaluation):
    return proportion(evaluation.correct, evaluation.holdout) if evaluation.executed and evaluation.holdout else None


def _card_row(*, fmt: str, facts: ModelFacts, size: int, sha256: str, entry: dict, evaluation: _Evaluation) -> dict:
    accuracy = _accuracy(evaluation)
    return {
        "variant": facts.precision, "format": fmt, "precision": facts.precision, "status": OFFERED,
        "recommended": True, "reason": f"imported; {evaluation.note}", "size": size, "sha256": sha256,
        "accuracy": accuracy.value if accuracy else None,
        "accuracy_interval": accuracy.to_dict() if accuracy else None,
        "executed": evaluation.executed, "preprocessing": entry,
        **({} if evaluation.executed else {"note": STRUCTURE_ONLY}),
        **evaluation.measurement,
        "details": {"imported": True, "notes": facts.notes},
    }


def _metrics(*, labels: list[str], evaluation: _Evaluation) -> dict:
    accuracy = _accuracy(evaluation)
    metrics: dict = {"labels": labels, "count": evaluation.holdout, "source": "imported"}
    if accuracy is not None:
        metrics["accuracy"] = accuracy.value
        metrics["accuracy_interval"] = accuracy.to_dict()
    return metrics


def _card(*, labels: list[str], row: dict, evaluation: _Evaluation, filename: str, sha256: str,
          imported_by: str | None) -> dict:
    accuracy = _accuracy(evaluation)
    return {
        "schema": CARD_SCHEMA,
        "labels": labels,
        "holdout_count": evaluation.holdout,
        "float": {"accuracy": accuracy.value if accuracy else None,
                  "accuracy_interval": accuracy.to_dict() if accuracy else None,
                  "latency_ms": row.get("latency_ms"), "threads": row.get("threads")},
        "policy": {"rule": "Imported: published when it loads, its outputs match its labels and its input its "
                           "preprocessing; accuracy shown when the project has holdout photos of its labels."},
        "variants": [row],
        "recommended": {row["format"]: row["variant"]},
        "published": True,
        "imported": {"filename": filename, "sha256": sha256, "imported_by": imported_by, "note": evaluation.note},
        "seconds": {},
        "config": {},
    }

