"""Project-wide pytest rules.

In CI (``CI=true``) a skipped test is a failure: a test whose component (Chromium,
redis-server, ...) is missing must fail, not skip silently.
"""

from __future__ import annotations

import os

import pytest


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"
