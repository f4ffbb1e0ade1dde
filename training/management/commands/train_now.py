"""`manage.py train_now --project NAME`: the nightly job, now, with a progress bar; prints decision and gate."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from challenges.selectors import project_get
from common.errors import DomainError
from training.models import TrainingRun
from training.nightly import training_run_execute
from training.release_notes import accuracy_interval
from training.runs import RunClaimRefused


class Command(BaseCommand):
    help = "Run the nightly training job for one project now, and publish if it succeeds."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Project slug (optional when there is only one).")

    def handle(self, *args, project=None, **options):
        try:
            target = project_get(slug=project)
        except DomainError as exc:
            raise CommandError(exc.message) from exc

        bar = tqdm(total=100, desc=f"{target.slug}", unit="%", bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")

        def on_progress(run: TrainingRun) -> None:
            bar.n = round(run.progress * 100)
            bar.set_postfix_str(run.stage)
            bar.refresh()

        try:
            run = training_run_execute(project=target, trigger=TrainingRun.Trigger.MANUAL, on_progress=on_progress)
        except RunClaimRefused as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:  # the run is recorded as failed with the same message
            raise CommandError(f"Training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            bar.close()

        self.stdout.write("Decision: " + json.dumps(run.decision, indent=2))
        if run.decision.get("candidates") is not None:
            self.stdout.write(candidates_table(run.decision))
        if run.gate:
            self.stdout.write(f"Gate: {run.gate.get('outcome')}: {run.gate.get('reason')}")
            self.stdout.write(json.dumps(_gate_scores(run.gate), indent=2))
        if run.status == TrainingRun.Status.SUCCEEDED:
            self.stdout.write(self.style.SUCCESS(f"{run.message} {_holdout_summary(run.metrics)}"))
        else:
            # Skipped, refused or cancelled: nothing was published, and the exit status says so.
            raise CommandError(f"Run {run.pk} {run.status}: {run.message}")


def _holdout_summary(metrics: dict) -> str:
    """Holdout accuracy and per-label recall, each with its n and 95% interval."""
    accuracy, count, interval = accuracy_interval(metrics)
    if accuracy is None:
        return "Holdout accuracy n/a."
    lines = [f"Holdout accuracy {accuracy:.3f}{_interval(interval, count)}."]
    for label, row in sorted((metrics.get("per_label") or {}).items()):
        lines.append(f"  recall of {label}: {row['recall']:.3f}{_interval(row.get('recall_ci95'), row.get('support'))}")
    return "\n".join(lines)


def _interval(ci95: list | None, n: int | None) -> str:
    return f" (95% CI {ci95[0]:.3f}-{ci95[1]:.3f}, n={n})" if ci95 else f" (n={n})"


def _gate_scores(gate: dict) -> dict:
    """The part of the gate record a person reads: both scores, what was compared, tolerances."""
    keys = ("champion", "candidate", "compared", "tolerance", "paired", "failures")
    return {key: gate[key] for key in keys if key in gate}


def candidates_table(decision: dict) -> str:
    """The measured selection as a table: each candidate's cross-validated accuracy, cost, outcome."""
    rows = [("candidate", "CV accuracy (95% CI, n)", "seconds", "outcome")]
    for c in decision["candidates"]:
        score = c.get("cv_accuracy")
        shown = f"{score['value']:.3f} ({score['ci95'][0]:.3f}-{score['ci95'][1]:.3f}, n={score['n']})" if score else "-"
        if c.get("skipped"):
            outcome = f"skipped: {c['skipped']}"
        else:
            outcome = "WINNER" if c["strategy"] == decision.get("winner") else ""
        rows.append((c["strategy"], shown, f"{c.get('seconds', 0):.1f}", outcome))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(3)) + "  " + row[3] for row in rows]
    rule = f"rule's choice: {decision.get('rule_choice')}; shipped: {decision.get('winner')}"
    return "\n".join(["Candidates (cross-validated on the train split):", *lines, rule, f"Why: {decision.get('why')}"])
