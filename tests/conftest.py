"""Shared pytest set-up: each area's fixtures live in tests/fixtures/<area>.py.

Tests skip with an install hint when a real counterpart (Prometheus, docker-registry,
skopeo, Chromium...) is missing on a developer's machine. In CI (``CI`` set) a skip is a
failure: .ci/run installs every counterpart, so a skip there would hide a missing install.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = [
    "tests.fixtures.serving",
    "tests.fixtures.registry",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.istio_traffic",
    "tests.fixtures.local",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    # An expected failure (xfail) is reported as skipped too, and fails here as well: no
    # feature may hide behind one in CI.
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI, where every counterpart must be installed: {report.longrepr}"
        )
