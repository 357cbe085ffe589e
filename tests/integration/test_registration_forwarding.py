"""
Registrations made on a worker go to the master (real processes): the
master's client.keys changes, and integrity sync brings it to the worker.
"""

from __future__ import annotations

import subprocess
import sys

from .nodes import FAST_OPTIONS, Cluster, Node, wait_for

OPTIONS = {**FAST_OPTIONS, "cluster.sync_integrity": 1, "cluster.recalculate_integrity": 1}


def manageAgents(node: Node, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from wazuhcluster.agents.manage import main; main()",
         "--home", str(node.home), *arguments],
        capture_output=True, text=True, timeout=60,
    )


def keysOf(node: Node) -> str:
    path = node.home / "etc" / "client.keys"
    return path.read_text() if path.exists() else ""


def test_worker_forwards_registrations_to_the_master(cluster: Cluster) -> None:
    master = cluster.master(options=OPTIONS).start().wait_ready()
    worker = cluster.worker("worker1", options=OPTIONS).start().wait_joined()

    added = manageAgents(worker, "-a", "10.1.2.3", "-n", "web-01", "-g", "web")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("Agent added with ID 001 and key ")
    assert " web-01 10.1.2.3 " in keysOf(master)
    assert (master.home / "queue" / "agent-groups" / "001").read_text() == "web\n"
    # The worker's own copy comes from the master, by integrity sync.
    wait_for(lambda: " web-01 10.1.2.3 " in keysOf(worker), "client.keys to reach the worker",
             timeout=15, alive=[master, worker])

    duplicate = manageAgents(worker, "-a", "10.1.2.3", "-n", "web-02")
    assert duplicate.returncode == 1
    assert "10.1.2.3" in duplicate.stderr
    assert "web-02" not in keysOf(master)

    removed = manageAgents(worker, "-r", "001")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "Agent 001 (web-01, 10.1.2.3) removed.\n"
    assert "001 !web-01 10.1.2.3 " in keysOf(master)

    # Master gone: the worker refuses, and changes nothing locally.
    master.kill()
    worker.wait_log("Lost connection to master")
    before = keysOf(worker)
    refused = manageAgents(worker, "-a", "10.9.9.9", "-n", "db-01")
    assert refused.returncode == 1
    assert refused.stderr == "agents must be registered in the master node, which is not reachable\n"
    assert keysOf(worker) == before
