"""The nightly training job: claim, snapshot, train, verify, gate, compress, publish.

torch is imported lazily (inside `_pipeline_run`) so the web process, which imports this
module through the admin and the API, never loads it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from challenges.models import Project
from challenges.selectors import project_today
from submissions.models import Photo
from submissions.selectors import photo_list_approved
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingPolicy, TrainingRun

logger = logging.getLogger(__name__)

_HEARTBEAT_EVERY_S = 2.0

ProgressCallback = Callable[[TrainingRun], None]


class RunClaimRefused(Exception):
    """Another run holds the claim (same night, or a run of this project is going on)."""


def training_run_claim(
    *, project: Project, night: dt.date, trigger: str, requested_by=None
) -> TrainingRun:
    """Claim the right to train `project` now; raise RunClaimRefused when it is taken.

    Stale runs (their worker stopped sending heartbeats, e.g. it was killed) are marked
    failed first, so a killed worker never blocks the next night.
    """
    training_run_fail_stale(project=project)
    now = timezone.now()
    try:
        with transaction.atomic():
            return TrainingRun.objects.create(
                project=project,
                night=night,
                trigger=trigger,
                status=TrainingRun.Status.RUNNING,
                stage="claimed",
                worker=f"{socket.gethostname()}:{os.getpid()}",
                started_at=now,
                heartbeat_at=now,
                requested_by=requested_by,
            )
    except IntegrityError as exc:
        raise RunClaimRefused(f"{project.slug}: a run for {night} is already claimed or running.") from exc


def training_run_fail_stale(*, project: Project | None = None) -> int:
    """Mark runs whose worker died as failed (of one project, or all); return how many.

    Dead means: no heartbeat for PLATFORM_RUN_STALE_SECONDS, or claimed by a process of
    this host that no longer exists. The second is known at once, so a worker restarted
    after a crash (SIGKILL, out of memory) fails its predecessor's run when it starts.
    """
    running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING)
    if project is not None:
        running = running.filter(project=project)
    cutoff = timezone.now() - dt.timedelta(seconds=settings.PLATFORM_RUN_STALE_SECONDS)
    here = f"{socket.gethostname()}:"
    gone = [
        pk for pk, worker in running.filter(worker__startswith=here).values_list("pk", "worker")
        if _process_gone(worker.removeprefix(here))
    ]
    failed = running.filter(Q(heartbeat_at__lt=cutoff) | Q(pk__in=gone)).update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        message="The worker stopped reporting (killed or lost); nothing was published.",
    )
    if failed:
        logger.warning("failed %s training run(s) of dead workers", failed)
    return failed


def _process_gone(pid: str) -> bool:
    """True when no live process has this pid (on this host)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    # A killed process that its parent has not reaped yet (a zombie) is dead all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


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


class RunCancelled(Exception):
    """An admin asked the run to stop; raised at the next progress report."""


def training_run_execute(
    *,
    project: Project,
    trigger: str = TrainingRun.Trigger.NIGHTLY,
    night: dt.date | None = None,
    requested_by=None,
    on_progress: ProgressCallback | None = None,
) -> TrainingRun:
    """Run the whole job for one project (the nightly task and `train_now` both call this).

    Ends as succeeded (published), skipped (not enough data), refused (the gate kept the
    current release), unpublished (no compressed file, not even fp32, passed the checks),
    cancelled (an admin asked) or failed; only "succeeded" publishes.
    """
    night = night or project_today(project=project)
    run = training_run_claim(project=project, night=night, trigger=trigger, requested_by=requested_by)
    try:
        snapshot = dataset_snapshot_create(project=project)
        run.snapshot = snapshot
        _save_progress(run, stage="snapshot", progress=0.02, force=True)
        shortfall = _label_shortfall(snapshot)
        if shortfall:
            return _finish(run, status=TrainingRun.Status.SKIPPED, message=shortfall)
        unchanged = _release_of_snapshot(project=project, snapshot=snapshot)
        if unchanged is not None and trigger == TrainingRun.Trigger.NIGHTLY:
            # Every installed app would download the same model again for nothing. A manual
            # run (train_now, e.g. after changing the strategy override) still trains.
            return _finish(
                run, status=TrainingRun.Status.SKIPPED,
                message=f"No change in the approved photos since version {unchanged.version}.",
            )
        _cancel_check(run)
        # Everything the pipeline writes lives in this folder and goes with it, whatever happens.
        with tempfile.TemporaryDirectory(prefix="training-run-") as tmp:
            result, samples = _pipeline_run(run=run, snapshot=snapshot, out_dir=Path(tmp), on_progress=on_progress)
            run.metrics = {
                **result.metrics.to_dict(),
                "exported_file": result.onnx_metrics.to_dict(),
                "seconds": result.seconds,
            }
            run.config = {**run.config, "pipeline": result.config}
            run.history = result.history
            _cancel_check(run)
            _save_progress(run, stage="gate", progress=0.95, force=True)
            if on_progress is not None:
                on_progress(run)
            run.gate = training_run_gate(
                project=project, snapshot=snapshot, candidate=result.onnx_metrics.to_dict(),
                predicted=_holdout_answers(samples=samples, metrics=result.onnx_metrics),
            )
            if run.gate["outcome"] == GATE_REFUSED:
                # Compression takes minutes: a refused model is not worth them.
                return _finish(run, status=TrainingRun.Status.REFUSED, message=run.gate["reason"])
            _cancel_check(run)
            compression = _compression_run(
                run=run, result=result, samples=samples, out_dir=Path(tmp), on_progress=on_progress
            )
            run.model_card = _json_ready(compression.card)
            if not compression.published:
                return _finish(
                    run, status=TrainingRun.Status.UNPUBLISHED, message=_unpublished_reason(compression.card)
                )
            _cancel_check(run)
            _save_progress(run, stage="publish", progress=0.99, force=True)
            version = model_version_publish(run=run, snapshot=snapshot, result=result, compression=compression)
        return _finish(run, status=TrainingRun.Status.SUCCEEDED, message=f"Published version {version.version}.")
    except RunCancelled as exc:
        logger.info("training run %s cancelled", run.pk)
        return _finish(run, status=TrainingRun.Status.CANCELLED, message=str(exc))
    except Exception as exc:
        logger.exception("training run %s failed", run.pk)
        _finish(run, status=TrainingRun.Status.FAILED, message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if on_progress is not None:
            on_progress(run)


def _holdout_answers(*, samples: list, metrics) -> dict[str, str]:
    """The exported file's answer (label name) per holdout photo, keyed by sha256 (the sample key)."""
    holdout = [s.key for s in samples if s.split == "holdout"]
    if len(holdout) != len(metrics.predictions):
        raise ValueError(f"{len(metrics.predictions)} holdout answers for {len(holdout)} holdout photos")
    return {key: metrics.labels[index] for key, index in zip(holdout, metrics.predictions)}


def _release_of_snapshot(*, project: Project, snapshot: DatasetSnapshot) -> ModelVersion | None:
    """The newest published version, if it was trained on exactly this snapshot."""
    latest = ModelVersion.objects.filter(project=project).order_by("-version").first()
    # An imported version was not trained on its snapshot (only scored on it): train anyway.
    trained = latest is not None and latest.source == ModelVersion.Source.TRAINED
    return latest if trained and latest.snapshot_id == snapshot.pk else None


def training_run_cancel_request(*, runs, user=None) -> list[int]:
    """Ask running runs to stop (admin action); return the ids of the runs asked.

    The worker sees the flag at its next progress report and ends the run as cancelled;
    nothing is published and its temporary files go with it. Finished runs are left alone.
    """
    pks = list(
        TrainingRun.objects.filter(
            pk__in=[run.pk for run in runs], status=TrainingRun.Status.RUNNING, cancel_requested=False
        ).values_list("pk", flat=True)
    )
    TrainingRun.objects.filter(pk__in=pks, status=TrainingRun.Status.RUNNING).update(cancel_requested=True)
    if pks:
        logger.info("cancel requested for training runs %s by %s", pks, user)
    return pks


def _cancel_check(run: TrainingRun) -> None:
    """Raise RunCancelled when an admin has asked this run to stop (one indexed lookup)."""
    if TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        run.cancel_requested = True
        raise RunCancelled(f"Cancelled by an admin during {run.stage or 'start'}; nothing was published.")


GATE_PASSED = "passed"
GATE_REFUSED = "refused"
GATE_SKIPPED = "skipped"  # nothing to compare with (first version, no shared labels, unreadable release)


def training_run_gate(*, project: Project, snapshot: DatasetSnapshot, candidate: dict, predicted: dict[str, str]) -> dict:
    """Champion/challenger: score the current release on the candidate's holdout photos and compare.

    ``candidate`` is the candidate file's holdout metrics (``ClassificationMetrics.to_dict()``,
    for its labels); ``predicted`` is its answer (label name) per holdout photo, keyed by the
    photo's sha256 in the snapshot. The current release is the project's newest ModelVersion,
    run from its stored ONNX file with onnxruntime on the same holdout photos of ``snapshot``.
    The two are compared photo by photo (``training.ml.gate``: exact McNemar test on the photos
    where they disagree, Newcombe's interval for the difference), overall and per label; the
    candidate is refused only when it is worse beyond the noise and beyond
    PLATFORM_GATE_TOLERANCE_OVERALL (accuracy) or PLATFORM_GATE_TOLERANCE_PER_LABEL (recall).

    When the two models know different labels, both are compared on the holdout photos whose
    true label both know (the release's predictions of a label the candidate lacks count as
    wrong); labels only the candidate knows are listed and not gated. With no shared label in
    the holdout, or a release that cannot be read, the gate is skipped with the reason recorded.
    """
    from training.ml.gate import GATE_RULE, gate_compare

    tolerance = {
        "overall": float(settings.PLATFORM_GATE_TOLERANCE_OVERALL),
        "per_label": float(settings.PLATFORM_GATE_TOLERANCE_PER_LABEL),
    }
    record: dict = {
        "tolerance": tolerance, "metric": {"overall": "accuracy", "per_label": "recall"}, "rule": GATE_RULE,
    }
    champion = (
        ModelVersion.objects.filter(project=project).prefetch_related("artifacts").order_by("-version").first()
    )
    if champion is None:
        return {**record, "outcome": GATE_SKIPPED, "reason": "No published version yet: nothing to compare with."}
    # The release's float file, never a compressed one: the gate compares float models.
    artifact = next((a for a in champion.artifacts.all() if a.format == "onnx" and a.variant == "fp32"), None)
    imported = champion.source == ModelVersion.Source.IMPORTED
    if artifact is None and imported:
        # An imported file is the release, whatever its precision: ONNX runs here in onnxruntime,
        # pte and TFLite in their runtimes in a fresh process; Core ML cannot run on this host.
        from training.ml.formats import FORMATS

        runnable = [a for a in champion.artifacts.all() if a.format in FORMATS and FORMATS[a.format].executable_here]
        artifact = next((a for a in runnable if a.format == "onnx"), runnable[0] if runnable else None)
    record["champion"] = {"version": champion.version, "labels": _label_names(champion.labels),
                          "source": champion.source}
    if artifact is None:
        reason = f"Version {champion.version} has no fp32 ONNX file."
        if imported:
            formats = ", ".join(sorted({a.format for a in champion.artifacts.all()})) or "no file"
            reason = (
                f"The release (v{champion.version}) was imported as {formats}, which cannot be run on this "
                "host: the release could not be scored, so the gate is skipped and the candidate is published "
                "on its own checks (holdout metrics, the compression policy)."
            )
        return {**record, "outcome": GATE_SKIPPED, "reason": reason, "scored": False}
    record["champion"]["artifact_sha256"] = artifact.sha256

    candidate_labels = list(candidate["labels"])
    champion_labels = record["champion"]["labels"]
    shared = [label for label in candidate_labels if label in champion_labels]
    holdout = [e for e in _manifest_entries(snapshot) if e["split"] == "holdout" and e["label"] in shared]
    record["compared"] = {
        "labels": shared,
        "photos": len(holdout),
        "candidate_only_labels": [label for label in candidate_labels if label not in champion_labels],
        "champion_only_labels": [label for label in champion_labels if label not in candidate_labels],
    }
    if not holdout:
        return {
            **record,
            "outcome": GATE_SKIPPED,
            "reason": f"The release (v{champion.version}) and the candidate share no label with holdout photos.",
        }

    try:
        released = _champion_predict(version=champion, artifact=artifact, entries=holdout)
    except Exception as exc:  # a broken release must not block every future one
        logger.warning("gate: version %s cannot be scored: %s", champion.version, exc)
        return {
            **record,
            "outcome": GATE_SKIPPED,
            "reason": f"The release (v{champion.version}) could not be scored: {type(exc).__name__}: {exc}",
        }
    truth = [e["label"] for e in holdout]
    ours = [predicted[e["sha256"]] for e in holdout]
    record["champion"].update(_scores_from_predictions(truth=truth, predicted=released, labels=shared))
    record["candidate"] = _scores_from_predictions(truth=truth, predicted=ours, labels=shared)
    paired = gate_compare(
        truth=truth, candidate=ours, release=released, labels=shared,
        tolerance_overall=tolerance["overall"], tolerance_per_label=tolerance["per_label"],
    )
    failures = paired.pop("failures")
    record["paired"] = paired
    record["failures"] = failures
    if failures:
        record["outcome"] = GATE_REFUSED
        record["reason"] = f"Worse than the current release (v{champion.version}): " + "; ".join(failures) + "."
    else:
        overall = paired["overall"]
        record["outcome"] = GATE_PASSED
        record["reason"] = (
            f"Not worse than the current release (v{champion.version}) beyond the noise and the tolerance "
            f"on {len(holdout)} holdout photos (they disagree on {overall['a_only'] + overall['b_only']}: "
            f"candidate right on {overall['a_only']}, release on {overall['b_only']}; exact p={overall['p_value']:.3g})."
        )
    return record


def _champion_predict(*, version: ModelVersion, artifact: ModelArtifact, entries: list[dict]) -> list[str]:
    """Label names the release predicts for the manifest entries (onnxruntime, no torch)."""
    from training.ml.config import Preprocessing
    from training.ml.inference import onnx_predict_images, onnx_session

    with default_storage.open(artifact.file.name, "rb") as fh:
        payload = fh.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != artifact.sha256:
        raise ValueError(f"stored bytes have sha256 {digest[:12]}, the registry says {artifact.sha256[:12]}")
    photos = Photo.objects.in_bulk([e["photo"] for e in entries], field_name="public_id")
    if artifact.format != "onnx":  # an imported pte or TFLite release: its own runtime, a fresh process
        with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
            path = Path(tmp) / "release"
            path.write_bytes(payload)
            measured = photos_run_file(
                path=path, format=artifact.format, preprocessing=artifact.preprocessing or version.preprocessing,
                photos=[photos[uuid.UUID(e["photo"])] for e in entries], runs=1,
            )
        names = _label_names(version.labels)
        return [names[i] for i in measured.probabilities.argmax(axis=1).tolist()]
    session = onnx_session(path_or_bytes=payload, num_threads=settings.PLATFORM_TORCH_THREADS or None)
    probabilities = onnx_predict_images(
        path_or_bytes=session,
        images=[_opener(photos[uuid.UUID(e["photo"])].image.name) for e in entries],
        preprocessing=Preprocessing.from_manifest(artifact.preprocessing or version.preprocessing),
    )
    names = _label_names(version.labels)
    return [names[i] for i in probabilities.argmax(axis=1).tolist()]


def photos_run_file(*, path: Path, format: str, preprocessing: dict, photos: list[Photo], runs: int = 10):
    """Run a model file on photos in its own runtime in a fresh process (``measure.artifact_measure``).

    The photos are prepared as ``preprocessing`` (a manifest ``input``) says, laid out NHWC when it
    says so. No torch in this process. Returns the Measurement (probabilities [N, C], latency, ...).
    """
    import numpy as np

    from training.ml.config import Preprocessing
    from training.ml.images import image_to_array
    from training.ml.measure import artifact_measure

    spec = Preprocessing.from_manifest({k: v for k, v in preprocessing.items() if k != "layout"})
    if photos:
        inputs = np.stack([image_to_array(_opener(p.image.name)(), preprocessing=spec) for p in photos])
    else:  # nothing to score: one grey image still proves the file runs and counts its outputs
        inputs = np.zeros((1, 3, spec.input_size, spec.input_size), dtype=np.float32)
    if preprocessing.get("layout") == "NHWC":
        inputs = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1))
    return artifact_measure(path=path, format=format, inputs=inputs, threads=1, runs=runs, timeout=600)


def _scores_from_predictions(*, truth: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy and per-label recall (None without support), each with its n and 95% interval."""
    from training.ml.stats import proportion

    recall, recall_ci95, support_of = {}, {}, {}
    for label in labels:
        support = [p for t, p in zip(truth, predicted) if t == label]
        hits = sum(p == label for p in support)
        recall[label] = hits / len(support) if support else None
        recall_ci95[label] = proportion(hits, len(support)).to_dict()["ci95"] if support else None
        support_of[label] = len(support)
    correct = sum(t == p for t, p in zip(truth, predicted))
    return {
        "accuracy": correct / len(truth) if truth else 0.0, "correct": correct, "count": len(truth),
        "accuracy_ci95": proportion(correct, len(truth)).to_dict()["ci95"],
        "recall": recall, "recall_ci95": recall_ci95, "support": support_of,
    }


def _label_names(labels) -> list[str]:
    # Output index -> name: a list, or a JSON object keyed by the index as text.
    if isinstance(labels, dict):
        return [labels[key] for key in sorted(labels, key=int)]
    return list(labels)


def _manifest_entries(snapshot: DatasetSnapshot) -> list[dict]:
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


def model_version_publish(
    *, run: TrainingRun, snapshot: DatasetSnapshot, result, compression, provenance: dict | None = None
) -> ModelVersion:
    """Store every offered file as one new immutable version, all or nothing.

    ``result`` is the training result (float model metrics and preprocessing), ``compression``
    the ``CompressionResult``: its offered artifacts become the version's files (the float model
    and its compressed alternatives), its card is kept with the version. Each stored object is
    read back and its sha256 compared with the measured file's: what apps download is exactly
    what was measured. Any failure removes the objects already stored and creates no row.
    ``provenance`` (imports) sets the version's source fields; the default is "trained".
    """
    project = run.project
    stored: list[str] = []
    try:
        with transaction.atomic():
            # Lock the project row: concurrent publishes take numbers one after another.
            Project.objects.select_for_update().get(pk=project.pk)
            last = ModelVersion.objects.filter(project=project).order_by("-version").first()
            number = (last.version if last else 0) + 1
            version = ModelVersion.objects.create(
                project=project,
                version=number,
                run=run,
                snapshot=snapshot,
                labels=list(result.labels),
                preprocessing=result.preprocessing.to_manifest(),
                metrics=result.metrics.to_dict(),
                model_card=_json_ready(compression.card),
                **(provenance or {}),
            )
            for artifact in compression.artifacts:
                stem = f"{project.slug}-v{number}-{artifact.variant}"
                name = f"models/{project.slug}/v{number}/{stem}.{artifact.extension}"
                with open(artifact.path, "rb") as fh:
                    saved = default_storage.save(name, File(fh))
                stored.append(saved)
                _stored_sha256_check(name=saved, expected=artifact.sha256)
                ModelArtifact.objects.create(
                    version=version,
                    format=artifact.format,
                    variant=artifact.variant,
                    precision=artifact.precision,
                    recommended=artifact.recommended,
                    file=saved,
                    size=artifact.size,
                    sha256=artifact.sha256,
                    preprocessing=artifact.preprocessing,
                    companions=list(artifact.companions),
                    measurements=_json_ready(artifact.measurements),
                    verification=_json_ready(artifact.measurements),
                )
            # After the commit (immediately, outside an outer transaction): releasing on the
            # channels must never un-publish the version, so it is not part of this one, and
            # the hook never raises (it runs before this block's cleanup handler is left).
            transaction.on_commit(lambda: _version_distribute(version))
        return version
    except BaseException:
        # The rows never committed, so the objects would be orphans: remove them.
        for name in stored:
            default_storage.delete(name)
        raise


def _version_distribute(version: ModelVersion) -> None:
    """Hand a committed version to distribution (patches, auto-promote channels); log failures."""
    try:
        from mobile_api.services import version_distribute  # the web app's side, imported when needed

        version_distribute(version=version)
    except Exception:
        logger.exception("distributing version %s failed; it stays published", version)


class StoredFileMismatch(Exception):
    """The bytes read back from storage are not the bytes that were measured."""


def _stored_sha256_check(*, name: str, expected: str) -> None:
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise StoredFileMismatch(
            f"{name}: stored bytes have sha256 {digest.hexdigest()[:12]}, the measured file {expected[:12]}"
        )


def compression_config_for(project: Project):
    """The CompressionConfig of a project: site settings, narrowed by its TrainingPolicy."""
    from training.ml.config import CompressionConfig

    variants = tuple(settings.PLATFORM_COMPRESSION_VARIANTS)
    points = float(settings.PLATFORM_MAX_ACCURACY_LOSS_POINTS)
    coreml, offer_unexecuted = (), False
    policy = TrainingPolicy.objects.filter(project=project).first()
    if policy is not None:
        coreml, offer_unexecuted = tuple(policy.coreml_variants or ()), bool(policy.coreml_offer)
        if policy.compression_variants:
            variants = tuple(policy.compression_variants)
        if policy.max_accuracy_loss_points is not None:
            points = float(policy.max_accuracy_loss_points)
    return CompressionConfig(
        variants=variants,
        formats=tuple(settings.PLATFORM_COMPRESSION_FORMATS),
        max_accuracy_loss=points / 100.0,
        prune_macs_ratio=float(settings.PLATFORM_PRUNE_MACS_RATIO),
        distill_min_train_photos=int(settings.PLATFORM_DISTILL_MIN_TRAIN_PHOTOS),
        latency_threads=int(settings.PLATFORM_LATENCY_THREADS),
        coreml_variants=coreml,
        offer_unexecuted=offer_unexecuted,
    )


def _compression_run(*, run: TrainingRun, result, samples: list, out_dir: Path, on_progress):
    """Build, measure and judge the compressed variants of the trained model (run progress 95-99%)."""
    # Looked up at call time: tests replace training.ml.compress.compression_pipeline.
    from training.ml import compress

    config = compression_config_for(run.project)
    run.config = {**run.config, "compression": _json_ready(dataclasses.asdict(config))}
    _save_progress(run, stage="compress", progress=0.95, force=True)

    def progress(stage: str, fraction: float) -> None:
        start, width = _COMPRESSION_STAGES.get(stage, (0.0, 0.0))
        _save_progress(run, stage=stage, progress=0.95 + 0.04 * (start + width * max(0.0, min(1.0, fraction))))
        _cancel_check(run)
        if on_progress is not None:
            on_progress(run)

    return compress.compression_pipeline(
        model=result.model,
        float_onnx=result.artifact_path,
        labels=list(result.labels),
        preprocessing=result.preprocessing,
        train=[s for s in samples if s.split == "train"],
        holdout=[s for s in samples if s.split == "holdout"],
        out_dir=out_dir,
        config=config,
        progress=progress,
        num_threads=_torch_threads(),
    )


# Compression stages within the run's 95-99%: building takes most of the time.
_COMPRESSION_STAGES = {"compress": (0.0, 0.75), "measure": (0.75, 0.25)}


def _unpublished_reason(card: dict) -> str:
    """Why nothing was offered: the fp32 rows' reasons (the float model's own files), else every row's."""
    rows = card.get("variants") or []
    named = [r for r in rows if r.get("variant") == "fp32"] or rows
    reasons = "; ".join(
        f"{r.get('variant')}/{r.get('format')} {r.get('status')}: {r.get('reason') or 'no reason given'}" for r in named
    )
    return "No file passed the checks, nothing was published" + (f" ({reasons})." if reasons else ".")


def _json_ready(value):
    """``value`` as it reads back from a JSONField (tuples become lists): memory and database agree."""
    return json.loads(json.dumps(value))


def _torch_threads() -> int:
    return settings.PLATFORM_TORCH_THREADS or os.cpu_count() or 1


def _pipeline_run(*, run: TrainingRun, snapshot: DatasetSnapshot, out_dir: Path, on_progress):
    """Train, evaluate, export and verify the float model; return (result, the Sample list it used)."""
    import torch

    from training.feature_cache import StorageExportCache, StorageFeatureCache
    from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
    from training.ml.pipeline import Sample
    from training.ml.strategies import SelectionConfig, StrategyThresholds
    from training.ml.transfer import transfer_pipeline

    threads = _torch_threads()
    torch.set_num_threads(threads)
    labels = sorted(snapshot.label_counts)
    index = {name: i for i, name in enumerate(labels)}
    entries = _manifest_entries(snapshot)
    photos = Photo.objects.in_bulk([entry["photo"] for entry in entries], field_name="public_id")
    # Near-duplicate groups (the hash their split comes from): cross-validation keeps each in one fold.
    group_of = dataset_split_keys(list(photos.values()))
    samples = [
        Sample(
            # The content hash keys the feature cache: the same pixels never pay twice.
            key=entry["sha256"],
            label=index[entry["label"]],
            split=entry["split"],
            open_image=_opener(photos[uuid.UUID(entry["photo"])].image.name),
            group=group_of[photos[uuid.UUID(entry["photo"])].pk],
        )
        for entry in entries
    ]
    backbone = BackboneConfig(weights_path=settings.PLATFORM_WEIGHTS_PATH)
    preprocessing = Preprocessing()
    probe = LinearProbeConfig()
    override = _strategy_override(project=run.project)
    # What the run knows before the pipeline decides; the size x similarity decision
    # (inputs, measured similarity, thresholds, choice, reason) is merged in afterwards.
    context = {
        "override_note": override["note"],
        "label_counts": snapshot.label_counts,
        "balance": snapshot.balance,
        "identical_photos_merged": len(snapshot.manifest["photos"]) - len(entries),
    }
    run.decision = {"strategy": override["strategy"] or "deciding", "override": override["strategy"], **context}
    run.config = {
        "backbone": {"weights_path": backbone.weights_path, "width_mult": backbone.width_mult},
        "preprocessing": preprocessing.to_manifest(),
        "probe": dataclasses.asdict(probe),
        "torch_threads": threads,
        "snapshot": snapshot.manifest_sha256,
    }
    _save_progress(run, stage="decide", progress=0.02, force=True)

    def progress(stage: str, fraction: float) -> None:
        # The pipeline's stages take the run from 2% to 95%; gate and publishing do the rest.
        _save_progress(run, stage=stage, progress=0.02 + 0.93 * _stage_offset(stage, fraction))
        _cancel_check(run)
        if on_progress is not None:
            on_progress(run)

    result = transfer_pipeline(
        samples=samples,
        labels=labels,
        backbone=backbone,
        preprocessing=preprocessing,
        strategy=override["strategy"],
        thresholds=StrategyThresholds(
            large_per_label=settings.PLATFORM_STRATEGY_LARGE_PER_LABEL,
            similarity_min_score=settings.PLATFORM_STRATEGY_SIMILARITY_MIN_SCORE,
        ),
        probe=probe,
        out_dir=out_dir,
        progress=progress,
        feature_cache=StorageFeatureCache(),
        export_cache=StorageExportCache(),
        selection=SelectionConfig(
            folds=settings.PLATFORM_STRATEGY_CV_FOLDS,
            fine_tune_min_per_label=settings.PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL,
            budget_minutes=settings.PLATFORM_TRAINING_BUDGET_MINUTES,
        ),
    )
    run.decision = {**(result.decision or {}), "strategy": (result.decision or {}).get("choice"), **context}
    run.config = {**run.config, **{k: v for k, v in result.config.items() if k not in run.config}}
    # The same samples (and their openers) feed the compression stage: calibration and holdout.
    return result, samples


def _strategy_override(*, project: Project) -> dict:
    """The admin's strategy override for the project: {"strategy": name or None, "note": text}."""
    policy = TrainingPolicy.objects.filter(project=project).first()
    if policy is None or not policy.strategy_override:
        return {"strategy": None, "note": ""}
    return {"strategy": policy.strategy_override, "note": policy.note}


_STAGES = {
    "decide": (0.0, 0.15), "features": (0.15, 0.45), "train": (0.6, 0.1), "evaluate": (0.7, 0.05),
    "export": (0.75, 0.15), "verify": (0.9, 0.1),
}


def _stage_offset(stage: str, fraction: float) -> float:
    start, width = _STAGES.get(stage, (0.0, 0.0))
    return start + width * max(0.0, min(1.0, fraction))


def _opener(name: str):
    def open_image():
        from PIL import Image

        with default_storage.open(name, "rb") as fh:
            image = Image.open(fh)
            image.load()
        return image

    return open_image


def _label_shortfall(snapshot: DatasetSnapshot) -> str:
    """Why there is not enough data to train, or '' when there is."""
    minimum = settings.PLATFORM_MIN_PHOTOS_PER_LABEL
    short = [
        f"{label} ({counts['train']} train, {counts['holdout']} holdout)"
        for label, counts in sorted(snapshot.label_counts.items())
        if counts["train"] < minimum or counts["holdout"] < 1
    ]
    if len(snapshot.label_counts) < 2:
        return "A model needs at least two labels."
    if short:
        return f"Not enough approved photos (need {minimum} train and 1 holdout per label): " + ", ".join(short)
    return ""


_last_saved: dict[int, float] = {}


def _save_progress(run: TrainingRun, *, stage: str, progress: float, force: bool = False) -> None:
    """Record stage, progress and a heartbeat; throttled so progress costs no time."""
    run.stage = stage
    run.progress = round(progress, 4)
    now = time.monotonic()
    if not force and now - _last_saved.get(run.pk, 0.0) < _HEARTBEAT_EVERY_S:
        return
    _last_saved[run.pk] = now
    run.heartbeat_at = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        stage=run.stage,
        progress=run.progress,
        heartbeat_at=run.heartbeat_at,
        snapshot=run.snapshot,
        decision=run.decision,
        config=run.config,
    )


def _finish(run: TrainingRun, *, status: str, message: str) -> TrainingRun:
    run.status = status
    run.message = message
    run.finished_at = timezone.now()
    run.heartbeat_at = run.finished_at
    if status == TrainingRun.Status.SUCCEEDED:
        run.stage, run.progress = "done", 1.0
    # Named fields: never write back cancel_requested, which an admin may set meanwhile.
    run.save(
        update_fields=[
            "status", "message", "finished_at", "heartbeat_at", "stage", "progress", "snapshot",
            "decision", "config", "metrics", "history", "gate", "model_card", "updated_at",
        ]
    )
    _last_saved.pop(run.pk, None)
    return run
