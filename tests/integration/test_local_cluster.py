"""
The README's demo (scripts/local_cluster.py, which scripts/local-cluster
runs after installing): a master and two workers join, the sample rules
reach the workers, and the sample agents show with their nodes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .nodes import free_port

REPOSITORY = Path(__file__).resolve().parents[2]


def test_demo_cluster(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts" / "local_cluster.py"), "--work", str(tmp_path / "demo"),
         "--port", str(free_port()), "--exit-after-join"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "worker-node1  127.0.0.1  worker" in out
    assert "have reached every worker." in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:3].isdigit()}
    assert rows["001"][-2:] == ["Active", "worker-node1"], out
    assert rows["002"][-2:] == ["Active", "worker-node2"], out
    assert rows["003"][-2:] == ["Disconnected", "worker-node1"], out
    assert rows["004"][-3:] == ["Never", "connected", "unknown"], out
    assert "Listing 5 agent(s)." in out
    # It asked the master's REST API as the curl line it prints does.
    assert "The master's REST API (answering: 3 connected nodes):" in out, out
    assert '$ curl -u wazuh:' in out and '/cluster/healthcheck?pretty"' in out
