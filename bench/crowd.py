"""A simulated crowd verifies photos through the real API; staff-only moderation is the baseline.

    .venv/bin/python bench/crowd.py [--seeds 1,2,3] [--photos 300] [--volunteers 200]   (10 min a seed here)

Per seed, on a fresh SQLite database (Django's test client, the real URLconf, services and
settings defaults): one project with two labels; `--photos` pending uploads from the
volunteers themselves, 10% deliberately mislabelled; an initial gold set staff approved (10%
as many photos); the published model simulated by a calibrated score per photo (its
probability for the true label ~ Beta(6, 1.5), mean 0.8; the claimed label's probability is
stored as the upload follow-up stores it, and below 0.2 flags "model disagrees"). Volunteers'
accuracies follow Beta(17, 3) (mean 0.85, sd 0.08); 10% of them are random clickers. Each
round every volunteer asks `GET /api/v1/verification/next/` and answers with
`POST /api/v1/verification/<id>/vote/` (3% "not sure"); rounds go on until no pending photo
is handed out any more. Staff then decide what is left (assumed right), and the training
snapshot (`dataset_snapshot_create`) is built and searched for the injected mislabels.

Baseline in the same run: staff moderate every photo (no crowd): 0% decided without staff,
one staff decision per photo, no mislabel in the snapshot if staff are always right.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "crowd.json"
MISLABEL_SHARE = 0.10
CLICKER_SHARE = 0.10
UNSURE_SHARE = 0.03
GOLD_PER_PHOTO = 0.10
MAX_ROUNDS = 80


def _setup_django(var_dir: Path) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "platform")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DJANGO_SECRET_KEY"] = secrets.token_hex(32)
    os.environ["PLATFORM_VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = f"sqlite:///{var_dir / 'crowd.sqlite3'}"
    os.environ["PLATFORM_VERIFY_RATE"] = "100000/min"  # 200 simulated people share one process
    import django

    django.setup()
    logging.getLogger("ops.access").setLevel(logging.WARNING)
    logging.getLogger("django.request").setLevel(logging.ERROR)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run_seed(seed: int, *, photos: int, volunteers: int) -> dict:
    """One simulated crowd; returns its figures."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from challenges.models import Label, Project
    from submissions.models import Photo
    from submissions.services import photo_moderate
    from training.ml.stats import proportion
    from training.snapshots import dataset_snapshot_create
    from verification import services as verification_services
    from verification.models import VerificationDecision, VerificationTask

    call_command("flush", interactive=False, verbosity=0)
    rng = random.Random(seed)
    verification_services.rng.seed(seed)
    User = get_user_model()
    project = Project.objects.create(slug="crowd", title="Crowd")
    labels = [Label.objects.create(project=project, name=name) for name in ("ants", "bees")]
    staff = User.objects.create_user("staff", is_staff=True)
    people = []
    for index in range(volunteers):
        clicker = index < volunteers * CLICKER_SHARE
        people.append({
            "user": User.objects.create_user(f"v{index}"),
            "clicker": clicker,
            "accuracy": 0.5 if clicker else rng.betavariate(17, 3),
        })
    truth: dict[int, str] = {}

    def add_photo(*, uploader, true_label, claimed_label, status=Photo.Status.PENDING, moderated_by=None):
        n = len(truth)
        p_true = rng.betavariate(6, 1.5)
        confidence = p_true if claimed_label == true_label else 1 - p_true
        photo = Photo.objects.create(
            project=project, label=claimed_label, volunteer=uploader, status=status, moderated_by=moderated_by,
            image=f"photos/crowd/{seed}-{n}.jpg", width=64, height=48, source_format="jpeg",
            upload_sha256=f"{seed}-{n}", sha256=f"{seed:04d}{n:060d}", phash=f"{n:016x}",
            model_confidence=confidence, flag_model_disagreement=confidence < 0.2,
        )
        truth[photo.pk] = true_label.name
        return photo

    for _ in range(int(photos * GOLD_PER_PHOTO)):  # the initial gold set, approved by staff
        label = rng.choice(labels)
        add_photo(uploader=rng.choice(people)["user"], true_label=label, claimed_label=label,
                  status=Photo.Status.APPROVED, moderated_by=staff)
    for person in people:  # everyone takes part: at least one photo of their own
        label = rng.choice(labels)
        add_photo(uploader=person["user"], true_label=label, claimed_label=label, status=Photo.Status.APPROVED)
    pending_ids = []
    for _ in range(photos):
        true_label = rng.choice(labels)
        mislabelled = rng.random() < MISLABEL_SHARE
        claimed = next(label for label in labels if label != true_label) if mislabelled else true_label
        pending_ids.append(add_photo(uploader=rng.choice(people)["user"], true_label=true_label,
                                     claimed_label=claimed).pk)

    clients = []
    for person in people:
        client = APIClient()
        client.force_authenticate(person["user"])
        clients.append(client)
    votes = gold_votes = requests = 0
    started = time.perf_counter()
    for _round in range(MAX_ROUNDS):
        handed_out = 0
        order = list(range(len(people)))
        rng.shuffle(order)
        for index in order:
            person, client = people[index], clients[index]
            response = client.get(f"/api/v1/verification/next/?project={project.slug}")
            requests += 1
            if response.status_code == 204:
                continue
            body = response.json()
            task = VerificationTask.objects.select_related("photo").get(public_id=body["id"])  # the simulation's eyes
            gold_votes += task.is_gold
            handed_out += not task.is_gold
            is_true = truth[task.photo_id] == body["label"]
            if rng.random() < UNSURE_SHARE:
                answer = "unsure"
            elif person["clicker"]:
                answer = rng.choice(["yes", "no"])
            else:
                right = rng.random() < person["accuracy"]
                answer = "yes" if is_true == right else "no"
            vote = client.post(f"/api/v1/verification/{body['id']}/vote/", {"answer": answer}, format="json")
            requests += 1
            assert vote.status_code == 200, vote.content
            votes += 1
        if not handed_out:
            break
    crowd_seconds = time.perf_counter() - started

    decisions = {d.photo_id: d for d in VerificationDecision.objects.filter(photo_id__in=pending_ids)}
    auto_right = sum(
        (d.outcome == "approved") == (truth[pid] == Photo.objects.get(pk=pid).label.name)
        for pid, d in decisions.items()
    )
    left = Photo.objects.filter(pk__in=pending_ids, status=Photo.Status.PENDING)
    staff_needed = left.count()
    for photo in left.select_related("label"):  # staff decide the rest, rightly
        if truth[photo.pk] == photo.label.name:
            photo_moderate(photo=photo, moderator=staff, approve=True)
        else:
            photo_moderate(photo=photo, moderator=staff, approve=False, reason="mislabelled")
    mislabelled_ids = {pid for pid in pending_ids if truth[pid] != Photo.objects.get(pk=pid).label.name}
    snapshot = dataset_snapshot_create(project=project)
    in_snapshot = {str(public_id) for public_id in Photo.objects.filter(pk__in=mislabelled_ids)
                   .values_list("public_id", flat=True)}
    leaked = sum(entry["photo"] in in_snapshot for entry in snapshot.manifest["photos"])
    wrong_rejections = sum(1 for pid, d in decisions.items() if d.outcome == "rejected" and pid not in mislabelled_ids)

    return {
        "seed": seed,
        "photos": photos,
        "volunteers": volunteers,
        "mislabelled": len(mislabelled_ids),
        "flagged_by_model": Photo.objects.filter(pk__in=pending_ids, flag_model_disagreement=True).count(),
        "votes": votes,
        "gold_votes": gold_votes,
        "requests": requests,
        "crowd_seconds": round(crowd_seconds, 1),
        "decided_without_staff": proportion(len(decisions), photos).to_dict(),
        "automatic_right": proportion(auto_right, len(decisions)).to_dict(),
        "automatic_approvals": sum(d.outcome == "approved" for d in decisions.values()),
        "automatic_rejections": sum(d.outcome == "rejected" for d in decisions.values()),
        "wrong_rejections": wrong_rejections,
        "mislabels_in_snapshot": proportion(leaked, len(mislabelled_ids)).to_dict(),
        "staff_decisions": staff_needed,
        "baseline_staff_decisions": photos,
        "staff_ratio": round(staff_needed / photos, 4),
    }


def _pct(figure: dict) -> str:
    low, high = figure["ci95"]
    return f"{100 * figure['value']:.1f}% [{100 * low:.1f}-{100 * high:.1f}] (n={figure['n']})"


def pooled(runs: list[dict]) -> dict:
    """The seeds together: the counts add up, the intervals narrow."""
    sys.path.insert(0, str(ROOT))
    from training.ml.stats import proportion

    def add(key: str) -> dict:
        return proportion(sum(r[key]["successes"] for r in runs), sum(r[key]["n"] for r in runs)).to_dict()

    photos = sum(r["photos"] for r in runs)
    return {
        "seed": "all", "photos": photos, "votes": sum(r["votes"] for r in runs),
        "gold_votes": sum(r["gold_votes"] for r in runs),
        "decided_without_staff": add("decided_without_staff"), "automatic_right": add("automatic_right"),
        "mislabels_in_snapshot": add("mislabels_in_snapshot"),
        "staff_decisions": sum(r["staff_decisions"] for r in runs), "baseline_staff_decisions": photos,
        "staff_ratio": round(sum(r["staff_decisions"] for r in runs) / photos, 4),
    }


def print_table(runs: list[dict]) -> None:
    header = ("seed", "decided without staff", "automatic decisions right", "mislabels in snapshot",
              "staff decisions (staff-only baseline)", "votes on pending / photo", "gold share of votes")
    print(" | ".join(header))
    for run in [*runs, pooled(runs)]:
        print(" | ".join([
            str(run["seed"]), _pct(run["decided_without_staff"]), _pct(run["automatic_right"]),
            _pct(run["mislabels_in_snapshot"]),
            f"{run['staff_decisions']} ({run['baseline_staff_decisions']}, ratio {run['staff_ratio']:.2f})",
            f"{(run['votes'] - run['gold_votes']) / run['photos']:.1f}", f"{run['gold_votes'] / run['votes']:.2f}",
        ]))
    print("staff-only baseline: 0% decided without staff, one staff decision per photo, "
          "0 mislabels in the snapshot when staff are always right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--volunteers", type=int, default=200)
    parser.add_argument("--table", action="store_true", help=f"print the table of {RESULTS.name} (pooled added)")
    args = parser.parse_args()
    if args.table:
        results = json.loads(RESULTS.read_text())
        results["pooled"] = pooled(results["runs"])
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print_table(results["runs"])
        return
    with tempfile.TemporaryDirectory(prefix="crowd-") as var_dir:
        _setup_django(Path(var_dir))
        from django.conf import settings

        config = {name: getattr(settings, name) for name in dir(settings) if name.startswith("PLATFORM_VERIFY_")}
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            runs.append(run_seed(seed, photos=args.photos, volunteers=args.volunteers))
            print(f"seed {seed} done in {runs[-1]['crowd_seconds']} s", file=sys.stderr)
    print_table(runs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": config, "runs": runs, "pooled": pooled(runs)}, indent=2,
                                  default=str) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
