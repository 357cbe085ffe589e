"""
Fixtures of the lab scenarios (issue 6): a L{Lab} that is always torn down,
whose logs are printed when a scenario fails; and the C{--lab-long} option.

The fast scenarios run with the rest of the tests.  The long ones (marked
C{lab_long}) run only with C{--lab-long} (or C{WAZUHCLUSTER_LAB_LONG=1}):

    .venv/bin/python -m pytest -q tests/lab --lab-long
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lab.cluster import Lab


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lab-long", action="store_true", help="also run the long lab scenarios")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_long: a long lab scenario, run only with --lab-long")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--lab-long") or os.environ.get("WAZUHCLUSTER_LAB_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="a long lab scenario: run with --lab-long")
    for item in items:
        if "lab_long" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def make_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """Makes labs under C{tmp_path} (not started); all are torn down after the test."""
    labs: list[Lab] = []

    def make(*args: object, **kwargs: object) -> Lab:
        lab = Lab(tmp_path / f"lab{len(labs)}", *args, **kwargs)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        failed = any(
            getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")
        )
        for lab in labs:
            if failed:
                print(lab.cluster.report())
            lab.teardown()
