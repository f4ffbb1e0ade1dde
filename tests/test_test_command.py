"""scripts/test must run every test: a skip there is reported as a failure, with its reason."""
from __future__ import annotations

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
