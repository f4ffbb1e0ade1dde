"""A model version in plain words for volunteers: what it tells apart, how often it is right
(with the number of unseen photos it was checked on and a 95% interval), and how many of the
photos it learnt from came from volunteers."""
from __future__ import annotations

from submissions.models import Photo
from training.ml.stats import proportion
from training.models import ModelVersion


def model_version_plain_summary(*, version: ModelVersion) -> dict:
    """``{sentence, accuracy: {correct, n, low, high} | None, volunteer_photos, training_photos}``.

    The accuracy is the frozen holdout's (photos the model never saw in training), as "about k
    times in 20" with the exact count and the Wilson interval from ``training.ml.stats``.
    """
    labels = [str(label) for label in (version.labels.values() if isinstance(version.labels, dict) else version.labels)]
    tells = f"{labels[0]} from {labels[1]}" if len(labels) == 2 else ", ".join(labels[:-1]) + f" and {labels[-1]} apart"
    training_ids = [
        entry["photo"] for entry in (version.snapshot.manifest or {}).get("photos", []) if entry.get("split") == "train"
    ]
    volunteer_photos = Photo.objects.filter(public_id__in=training_ids, source=Photo.Source.VOLUNTEER).count()
    metrics = version.metrics or {}
    n, accuracy = int(metrics.get("count") or 0), metrics.get("accuracy")
    sentence = f"Version {version.version} tells {tells}"
    interval = None
    if n and accuracy is not None:
        correct = round(accuracy * n)
        interval = proportion(correct, n)
        sentence += (
            f" right about {round(accuracy * 20)} times in 20: {correct} of {n} photos it never saw "
            f"(95% interval {interval.low:.0%} to {interval.high:.0%})."
        )
    else:
        sentence += " (not checked on unseen photos)."
    sentence += (
        f" {volunteer_photos} of the {len(training_ids)} photos it learnt from came from volunteers."
    )
    return {
        "sentence": sentence,
        "accuracy": None if interval is None else {"correct": interval.successes, "n": n, "low": interval.low, "high": interval.high},
        "volunteer_photos": volunteer_photos,
        "training_photos": len(training_ids),
    }
