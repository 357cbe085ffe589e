"""
The attacks run against real nodes, with the end-to-end tests' fixtures:
a L{Cluster} whose processes always end, and whose logs are printed when a
test fails.
"""

from tests.integration.conftest import cluster, pytest_runtest_makereport  # noqa: F401
