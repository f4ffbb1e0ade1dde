"""Reads for verification: who takes part, reputations from gold, the tally, suspicious pairs."""
from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from scipy.stats import beta, binomtest

from challenges.models import Project
from submissions.models import Photo
from verification.models import VerificationDecision, VerificationTask

# Beta(1, 1): no opinion before the first gold answer, so a newcomer's votes weigh nothing
# until gold has shown they beat chance (a flat prior is the cautious choice against
# accounts created to vote).
PRIOR_RIGHT = 1.0
PRIOR_WRONG = 1.0
_ANSWERED = Q(answer__in=[VerificationTask.Answer.YES, VerificationTask.Answer.NO])


@dataclass(frozen=True)
class Reputation:
    """A volunteer's record on gold in one project, and the weight their votes carry."""

    right: int
    wrong: int
    mean: float  # posterior mean accuracy, Beta(1 + right, 1 + wrong)
    lower: float  # 5% quantile
    upper: float  # 95% quantile
    weight: float  # log-odds of the mean, 0 when at or below chance or excluded
    excluded: bool  # upper bound below PLATFORM_VERIFY_MIN_ACCURACY: votes stop counting

    @property
    def n(self) -> int:
        return self.right + self.wrong


def reputation_from_counts(*, right: int, wrong: int) -> Reputation:
    """The Beta posterior of a voter's accuracy and the weight derived from it.

    weight = log(p / (1 - p)) with p the posterior mean: the log-likelihood ratio one vote
    of a voter right with probability p adds, so the weights of independent votes add up
    (the yes weight minus the no weight is the evidence for the label).
    """
    a, b = PRIOR_RIGHT + right, PRIOR_WRONG + wrong
    mean = a / (a + b)
    lower, upper = (float(x) for x in beta.ppf([0.05, 0.95], a, b))
    excluded = upper < settings.PLATFORM_VERIFY_MIN_ACCURACY
    weight = 0.0 if excluded or mean <= 0.5 else math.log(mean / (1 - mean))
    return Reputation(right=right, wrong=wrong, mean=mean, lower=lower, upper=upper, weight=weight,
                      excluded=excluded)


def reputations_for(*, project_id: int, volunteer_ids) -> dict[int, Reputation]:
    """Reputations of several volunteers in a project, in one query."""
    counts = {
        row["volunteer_id"]: row
        for row in VerificationTask.objects.filter(
            project_id=project_id, volunteer_id__in=list(volunteer_ids), is_gold=True, correct__isnull=False
        )
        .values("volunteer_id")
        .annotate(right=Count("id", filter=Q(correct=True)), wrong=Count("id", filter=Q(correct=False)))
    }
    empty = {"right": 0, "wrong": 0}
    return {
        vid: reputation_from_counts(right=counts.get(vid, empty)["right"], wrong=counts.get(vid, empty)["wrong"])
        for vid in volunteer_ids
    }


def reputation_get(*, project_id: int, volunteer_id: int) -> Reputation:
    """One volunteer's reputation in a project."""
    return reputations_for(project_id=project_id, volunteer_ids=[volunteer_id])[volunteer_id]


def verification_accuracy_for(*, volunteer: AbstractBaseUser) -> dict | None:
    """A volunteer's answers on gold photos, all projects together: right of n, 95% Wilson interval.

    None before the first gold answer (no number to show).
    """
    counts = VerificationTask.objects.filter(volunteer=volunteer, is_gold=True, correct__isnull=False).aggregate(
        n=Count("id"), right=Count("id", filter=Q(correct=True))
    )
    if not counts["n"]:
        return None
    ci = binomtest(counts["right"], counts["n"]).proportion_ci(confidence_level=0.95, method="wilson")
    return {"correct": counts["right"], "n": counts["n"], "low": float(ci.low), "high": float(ci.high)}


def project_ids_taking_part(*, volunteer: AbstractBaseUser) -> set[int]:
    """Projects a volunteer takes part in: those they have uploaded at least one photo to."""
    return set(Photo.objects.filter(volunteer=volunteer).values_list("project_id", flat=True).distinct())


def projects_taking_part(*, volunteer: AbstractBaseUser) -> QuerySet[Project]:
    return Project.objects.filter(pk__in=project_ids_taking_part(volunteer=volunteer)).order_by("slug")


def task_open_get(*, volunteer: AbstractBaseUser, project: Project) -> VerificationTask | None:
    """The volunteer's unanswered task in the project, if any."""
    return (
        VerificationTask.objects.filter(volunteer=volunteer, project=project, answered_at__isnull=True)
        .select_related("photo", "label_asked")
        .first()
    )


def photo_list_to_verify(*, volunteer: AbstractBaseUser, project: Project) -> QuerySet[Photo]:
    """Pending photos the volunteer may verify, the least asked about first, then the oldest.

    Not their own, not one they were already asked about, not flagged (those wait for
    staff whatever the votes say), not one staff took back from automation, and not one
    that already has PLATFORM_VERIFY_MAX_VOTES votes.
    """
    return (
        Photo.objects.filter(
            project=project, status=Photo.Status.PENDING, near_duplicate_of__isnull=True,
            flag_model_disagreement=False, flag_suspicious_volume=False,
        )
        .exclude(volunteer=volunteer)
        .exclude(verification_tasks__volunteer=volunteer)
        .exclude(verification_decisions__isnull=False)
        .annotate(asked=Count("verification_tasks"), votes=Count("verification_tasks", filter=_tasks_answered()))
        .filter(votes__lt=settings.PLATFORM_VERIFY_MAX_VOTES)
        .order_by("asked", "created_at", "id")
    )


def _tasks_answered() -> Q:
    return Q(verification_tasks__answer__in=[VerificationTask.Answer.YES, VerificationTask.Answer.NO])


def photo_list_gold(*, volunteer: AbstractBaseUser, project: Project) -> QuerySet[Photo]:
    """Gold photos for a volunteer: approved by staff (not by the crowd), not featured.

    Featured photos are public in the gallery; a volunteer could recognise them there.
    """
    return (
        Photo.objects.filter(project=project, status=Photo.Status.APPROVED, moderated_by__is_staff=True,
                             featured=False)
        .exclude(volunteer=volunteer)
        .exclude(verification_tasks__volunteer=volunteer)
    )


@dataclass(frozen=True)
class Tally:
    """The weighted votes on one photo, the model's included."""

    yes_weight: float
    no_weight: float
    human_votes: int
    votes: list[dict]

    @property
    def total(self) -> float:
        return self.yes_weight + self.no_weight


def model_vote(*, photo: Photo) -> tuple[str, float] | None:
    """The current model's vote from its stored probability for the claimed label.

    Its weight is the log-odds of that probability, capped below the minimum weight, so
    the model never decides alone.
    """
    confidence = photo.model_confidence
    if confidence is None:
        return None
    cap = min(settings.PLATFORM_VERIFY_MODEL_MAX_WEIGHT, 0.5 * settings.PLATFORM_VERIFY_MIN_WEIGHT)
    p = min(max(confidence, 1e-6), 1 - 1e-6)
    answer = VerificationTask.Answer.YES if p >= 0.5 else VerificationTask.Answer.NO
    return answer, min(abs(math.log(p / (1 - p))), cap)


def photo_tally(*, photo: Photo) -> Tally:
    """Sum the weights of the yes and no votes cast on a (non-gold) photo.

    Each vote weighs what its voter's record on gold says now, not when it was cast: a
    newcomer's early votes count once gold has shown their skill, and a lucky clicker's
    stop counting once gold has found them out.
    """
    yes = no = 0.0
    votes = []
    tasks = list(
        VerificationTask.objects.filter(photo=photo, is_gold=False).filter(_ANSWERED).order_by("answered_at", "id")
    )
    reputations = reputations_for(project_id=photo.project_id, volunteer_ids={task.volunteer_id for task in tasks})
    for task in tasks:
        weight = reputations[task.volunteer_id].weight
        votes.append({"volunteer": task.volunteer_id, "answer": task.answer, "weight": round(weight, 4)})
        if task.answer == VerificationTask.Answer.YES:
            yes += weight
        else:
            no += weight
    human = len(votes)
    vote = model_vote(photo=photo)
    if vote is not None:
        votes.append({"volunteer": None, "model": True, "answer": vote[0], "weight": round(vote[1], 4),
                      "confidence": photo.model_confidence})
        if vote[0] == VerificationTask.Answer.YES:
            yes += vote[1]
        else:
            no += vote[1]
    return Tally(yes_weight=yes, no_weight=no, human_votes=human, votes=votes)


def decision_active_for(*, photo: Photo) -> VerificationDecision | None:
    return VerificationDecision.objects.filter(photo=photo, reversed_at__isnull=True).first()


@dataclass(frozen=True)
class SuspiciousPair:
    """Two accounts that verified each other's photos far more often than chance."""

    volunteer_a: int
    volunteer_b: int
    observed: int  # votes of a on b's photos plus b on a's
    expected: float
    ratio: float


def pair_list_suspicious(*, project_id: int, min_votes: int = 5, min_ratio: float = 3.0) -> list[SuspiciousPair]:
    """Pairs whose mutual votes reach ``min_votes`` and ``min_ratio`` times the expected count.

    Expected votes of a on b's photos: a's votes on others' photos x b's share of the photos
    a could have been asked about (everyone's but a's). Task choice is the platform's, so a
    pair far above it has been skipping ("not sure") until the friend's photo came up, or
    is otherwise steering tasks.
    """
    rows = (
        VerificationTask.objects.filter(project_id=project_id, is_gold=False, photo__volunteer__isnull=False)
        .exclude(answer="")
        .values("volunteer_id", "photo__volunteer_id")
        .annotate(n=Count("id"))
    )
    votes: dict[tuple[int, int], int] = {}
    cast: dict[int, int] = {}
    for row in rows:
        votes[(row["volunteer_id"], row["photo__volunteer_id"])] = row["n"]
        cast[row["volunteer_id"]] = cast.get(row["volunteer_id"], 0) + row["n"]
    uploads = dict(
        Photo.objects.filter(project_id=project_id, volunteer__isnull=False)
        .values_list("volunteer_id").annotate(n=Count("id")).values_list("volunteer_id", "n")
    )
    total = sum(uploads.values())
    pairs = []
    seen = set()
    for a, b in votes:
        key = (min(a, b), max(a, b))
        if key in seen or a == b:
            continue
        seen.add(key)
        observed = votes.get((a, b), 0) + votes.get((b, a), 0)
        expected = 0.0
        for voter, owner in ((a, b), (b, a)):
            others = total - uploads.get(voter, 0)
            if others > 0:
                expected += cast.get(voter, 0) * uploads.get(owner, 0) / others
        ratio = observed / expected if expected else math.inf
        if observed >= min_votes and ratio >= min_ratio:
            pairs.append(SuspiciousPair(volunteer_a=key[0], volunteer_b=key[1], observed=observed,
                                        expected=round(expected, 2), ratio=round(ratio, 2)))
    return sorted(pairs, key=lambda pair: -pair.ratio)
