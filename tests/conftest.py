"""
Shared pytest settings.  Unit tests are trial SynchronousTestCases (no
reactor); integration tests run real processes.  Each test runs in its own
temporary folder, so that trial's mktemp() leaves nothing in the checkout.
"""

import pytest


@pytest.fixture(autouse=True)
def _inTemporaryFolder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
