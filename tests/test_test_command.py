"""scripts/test must run every test: a skip there is reported as a failure, with its reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest


def _skipped_report(*, wasxfail: str | None = None) -> pytest.TestReport:
    report = pytest.TestReport(
        nodeid="tests/x.py::test_x", location=("tests/x.py", 1, "test_x"), keywords={},
        outcome="skipped", longrepr=("tests/x.py", 2, "Skipped: weights not found at /nowhere"),
        when="setup",
    )
    if wasxfail is not None:
        report.wasxfail = wasxfail
    return report


def test_a_skip_fails_under_the_test_command_and_names_the_reason():
    report = _skipped_report()
    conftest._fail_the_skip(report)
    assert report.failed
    assert "weights not found at /nowhere" in str(report.longrepr)


def test_an_expected_failure_is_left_alone():
    report = _skipped_report(wasxfail="known bug")
    conftest._fail_the_skip(report)
    assert report.skipped


def test_the_hook_is_on_only_under_the_test_command(monkeypatch):
    monkeypatch.delenv("PLATFORM_REQUIRE_SERVICES", raising=False)
    assert not conftest._skip_is_a_failure()
    monkeypatch.setenv("PLATFORM_REQUIRE_SERVICES", "1")
    assert conftest._skip_is_a_failure()


def _ruff(path: Path, *args: str) -> subprocess.CompletedProcess:
    ruff = Path(sys.executable).parent / "ruff"  # installed from the lock's dev group
    config = Path(__file__).resolve().parent.parent / "pyproject.toml"
    return subprocess.run([str(ruff), "check", "--no-cache", "--config", str(config), *args, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_lint_refuses_unsorted_imports_and_stale_noqa_markers(tmp_path):
    """scripts/test fails on what scripts/lint finds: the configured rules are really on."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(os.sep, sys.argv)  # noqa: E731\n")
    result = _ruff(bad)
    assert result.returncode == 1
    assert "I001" in result.stdout and "RUF100" in result.stdout

    good = tmp_path / "good.py"
    good.write_text("import os\nimport sys\n\nprint(os.sep, sys.argv)\n")
    assert _ruff(good).returncode == 0
