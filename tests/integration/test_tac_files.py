"""
The ready-made tac/master.tac and tac/worker.tac run the same node service
as the twistd plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .nodes import Cluster, Node

REPOSITORY = Path(__file__).resolve().parents[2]


def tacCommand(node: Node, tac: str) -> list[str]:
    return [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "-ny", str(REPOSITORY / "tac" / tac), "--pidfile", str(node.pid_file),
    ]


def environment(node: Node) -> dict[str, str]:
    return {**os.environ, "WAZUH_HOME": str(node.home)}


def test_tac_files_run_a_cluster(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker("worker1")
    for node, tac in ((master, "master.tac"), (worker, "worker.tac")):
        node.process = cluster.spawn(
            tacCommand(node, tac), cwd=node.home, env=environment(node),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    rows = master.wait_listed(["master", "worker1"])
    assert [(r.name, r.type) for r in rows] == [("master", "master"), ("worker1", "worker")]
    assert "Successfully connected to master master" in worker.log_text()
    assert "Worker worker1 connected from 127.0.0.1" in master.log_text()
    assert master.pid_file.read_text().strip() == str(master.process.pid)


def test_tac_refuses_the_other_node_type(cluster: Cluster) -> None:
    worker = cluster.worker("worker1")
    result = subprocess.run(
        tacCommand(worker, "master.tac"), cwd=worker.home, env=environment(worker),
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert "configures a worker node, but this .tac file runs a master: use tac/worker.tac" in result.stderr
    assert not worker.control_socket.exists()
