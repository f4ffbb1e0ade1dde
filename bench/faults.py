"""Fault report: break the real servers under the platform and show what was lost (nothing).

Usage: .venv/bin/python bench/faults.py [--no-run]

Runs the fault tests with the README's test command (``scripts/test``: PostgreSQL, Redis
and radosgw on loopback, started and stopped by it), then prints one row per fault from
what those tests recorded (``tests/integration/conftest.py``'s ``fault_report``), and writes
bench/results/faults.json. Each test breaks one thing for real (SIGKILL, stopping a server,
restarting PostgreSQL, a second beat), keeps the clients going, and then checks the data:
rows against stored objects, accepted uploads against rows, releases against files.
``--no-run`` only prints the last recorded results. Takes about 5 minutes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "faults.json"
FAULT_TESTS = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "integration").glob("test_faults_*.py"))


def table(rows: dict[str, dict]) -> str:
    """The report as a Markdown table (what was tried, what clients saw, what the check found)."""
    lines = ["| fault | tried | clients saw | data checked afterwards | lost |", "|---|---|---|---|---|"]
    for row in rows.values():
        cells = [row["fault"], row["tried"], row["seen"], row["checked"], str(row["lost"])]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="print the last recorded results only")
    args = parser.parse_args()
    status = 0
    if not args.no_run:
        RESULTS.unlink(missing_ok=True)
        started = time.monotonic()
        status = subprocess.call([str(ROOT / "scripts" / "test"), "-q", "-p", "no:cacheprovider", *FAULT_TESTS], cwd=ROOT)
        print(f"\nfault tests: exit {status} in {time.monotonic() - started:.0f} s")
    if not RESULTS.is_file():
        print(f"no results in {RESULTS}", file=sys.stderr)
        return status or 1
    rows = json.loads(RESULTS.read_text())
    print(table(rows))
    for row in rows.values():
        extra = {key: value for key, value in row.items() if key not in {"fault", "tried", "seen", "checked", "lost"}}
        if extra:
            print(textwrap.fill(f"{row['fault']}: " + ", ".join(f"{k}={v}" for k, v in extra.items()), 100))
    lost = sum(int(row["lost"]) for row in rows.values())
    print(f"\nlost in all: {lost}")
    return status or (1 if lost else 0)


if __name__ == "__main__":
    sys.exit(main())
