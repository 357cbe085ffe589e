"""
The README's demo (scripts/local_cluster.py, which scripts/local-cluster
runs after installing): a master and two workers join, the sample rules
reach the workers, and the sample agents show with their nodes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from wazuhcluster.agents.agentinfo import AGENT_INFO_FOLDER
from wazuhcluster.agents.status import readRegistrationDates

from .nodes import free_port

REPOSITORY = Path(__file__).resolve().parents[2]


def test_demo_cluster(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts" / "local_cluster.py"), "--work", str(work),
         "--port", str(free_port()), "--api-port", str(free_port()), "--shown-from", str(REPOSITORY),
         "--exit-after-join"],
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
    # Every node's metrics answered on the URL printed for it.
    metrics = [line.split() for line in out.splitlines() if line.endswith(" samples)") and "/metrics" in line]
    assert [m[0] for m in metrics] == ["master-node:", "worker-node1:", "worker-node2:"], out
    assert all(m[1].startswith("http://127.0.0.1:") and m[2] == "(answering:" for m in metrics), out

    # The printed commands run as they are, in a fresh shell where the
    # virtual environment is not active (the demo has stopped by now: the
    # command is found, and says the daemon is not running).
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ") and "cluster_control" in line]
    assert len(commands) == 2, out
    bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    for command in commands:
        assert shlex.split(command)[0] == os.path.relpath(Path(sys.executable).parent / "cluster_control", REPOSITORY)
        ran = subprocess.run(["bash", "-c", command], cwd=REPOSITORY, env=bare, capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        assert ran.returncode == 1, (command, ran.returncode, ran.stdout, ran.stderr)
        assert "Error: cannot reach the cluster daemon at" in ran.stderr, ran.stderr

    # Sample data is plausible: every agent was registered before its last keep-alive.
    master = work / "master"
    registered = readRegistrationDates(str(master))
    statuses = {path.name.rsplit("-", 1)[0]: path.stat().st_mtime for path in (master / AGENT_INFO_FOLDER).iterdir()}
    assert set(statuses) == {"web-01", "db-01", "mail-01"}, statuses
    names = {line.split()[0]: line.split()[1] for line in (master / "queue" / "agents-timestamp").read_text().splitlines()}
    assert len(registered) == 4
    for agent_id, name in names.items():
        assert registered[agent_id] < time.time()
        if name in statuses:
            assert registered[agent_id] < statuses[name], (name, registered[agent_id], statuses[name])
