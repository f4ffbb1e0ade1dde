"""The gate: the current release scored on the candidate's holdout photos, compared photo by photo.

The release's stored file runs through ``training.scoring`` (the one place that reads an artifact,
checks its sha256 and predicts: onnxruntime here, other runtimes in a fresh process); no torch.
"""
from __future__ import annotations

import logging
import uuid

from django.conf import settings

from challenges.models import Project
from submissions.models import Photo
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion
from training.scoring import label_names, photos_predict_labels
from training.snapshots import dataset_snapshot_entries

logger = logging.getLogger(__name__)

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
    record["champion"] = {"version": champion.version, "labels": label_names(champion.labels),
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
    holdout = [e for e in dataset_snapshot_entries(snapshot) if e["split"] == "holdout" and e["label"] in shared]
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
    """Label names the release predicts for the manifest entries (``training.scoring``, no torch)."""
    photos = Photo.objects.in_bulk([e["photo"] for e in entries], field_name="public_id")
    return photos_predict_labels(
        version=version, artifact=artifact, photos=[photos[uuid.UUID(e["photo"])] for e in entries],
        num_threads=settings.PLATFORM_TORCH_THREADS or None,
    )


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
