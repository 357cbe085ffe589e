"""
Fixtures of the end-to-end tests: a L{Cluster} whose processes are always
ended, and whose logs are printed when a test fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .nodes import Cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster to build under C{tmp_path}; all its processes end with the test."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.cleanup()
        if _failed(request):
            print(c.report())
