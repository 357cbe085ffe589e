"""
Agents across a real cluster (processes on loopback): registration on the
master reaches every worker, statuses written on the workers reach the
master with their node, and a removed agent's files go from every node.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .nodes import FAST_OPTIONS, Cluster, Node, wait_for

OPTIONS = {
    **FAST_OPTIONS,
    "cluster.sync_integrity": 1,
    "cluster.recalculate_integrity": 1,
    "cluster.sync_agent_info": 0.5,
}
KEY = "e" * 64


def manage(node: Node, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from wazuhcluster.agents.manage import main; main(sys.argv[1:])",
         "--home", str(node.home), *arguments],
        capture_output=True, text=True, timeout=60,
    )


def keepAlive(node: Node, name: str, ip: str, *extra: str) -> None:
    """Write an agent's status on C{node} with the documented helper."""
    result = subprocess.run(
        [sys.executable, "-m", "wazuhcluster.agents.agentinfo", "--home", str(node.home), name, ip, *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def agents(node: Node, *filters: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """C{cluster_control -a} on C{node}: ID -> (name, status, node), and the last line."""
    result = node.control("-a", *filters)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    assert lines[rules[0] + 1].split() == ["ID", "Address", "Name", "Status", "Node"]
    table = {}
    for line in lines[rules[1] + 1 : rules[2]]:
        cells = line.split()
        table[cells[0]] = (cells[2], " ".join(cells[3:-1]), cells[-1])
    return table, lines[-1]


def waitAgents(node: Node, wanted: dict[str, tuple[str, str, str]], alive: list[Node]) -> None:
    last: list[object] = [None]

    def matches() -> bool:
        table, _ = agents(node)
        last[0] = table
        return all(table.get(k) == v for k, v in wanted.items())

    try:
        wait_for(matches, f"cluster_control -a on {node.node_name} to show {wanted}", timeout=20, alive=alive)
    except AssertionError as e:
        raise AssertionError(f"{e}; last shown: {last[0]}") from None


def keysOf(node: Node) -> str:
    path = node.home / "etc" / "client.keys"
    return path.read_text() if path.exists() else ""


def test_agents_across_the_cluster(cluster: Cluster) -> None:
    master = cluster.master(options=OPTIONS).start().wait_ready()
    w1 = cluster.worker("worker1", options=OPTIONS).start()
    w2 = cluster.worker("worker2", options=OPTIONS).start()
    nodes = [master, w1, w2]
    w1.wait_joined()
    w2.wait_joined()

    # Registered on the master, known on every worker.
    for ip, name in [("10.0.0.5", "web"), ("any", "db"), ("10.0.0.7", "mail"), ("any", "spare")]:
        added = manage(master, "-a", ip, "-n", name, "-g", "default")
        assert added.returncode == 0, added.stderr
    for worker in (w1, w2):
        wait_for(lambda: keysOf(worker) == keysOf(master), f"client.keys to reach {worker.node_name}",
                 timeout=20, alive=nodes)
        assert (worker.home / "queue" / "agent-groups" / "004").read_text() == "default\n"

    # Statuses written on two workers appear on the master, with node and status.
    keepAlive(w1, "web", "10.0.0.5")
    keepAlive(w1, "db", "any", "--age", "7200")
    keepAlive(w2, "mail", "10.0.0.7", "--pending")
    keepAlive(w2, "ghost", "10.9.9.9")  # not registered: ignored by the master
    waitAgents(master, {
        "001": ("web", "Active", "worker1"),
        "002": ("db", "Disconnected", "worker1"),
        "003": ("mail", "Pending", "worker2"),
        "004": ("spare", "Never connected", "unknown"),
        "000": (agents(master)[0]["000"][0], "Active", "master"),
    }, nodes)
    assert not (master.home / "queue" / "agent-info" / "ghost-10.9.9.9").exists()
    assert (master.home / "queue" / "agent-info" / "web-10.0.0.5").read_bytes() == (
        w1.home / "queue" / "agent-info" / "web-10.0.0.5"
    ).read_bytes()

    # A worker asks the master; filters as Wazuh's.
    table, last = agents(w2)
    assert table["001"] == ("web", "Active", "worker1") and last == "Listing 5 agent(s)."
    table, last = agents(master, "-fs", "Active")
    assert sorted(table) == ["000", "001"] and last == "Found 2 agent(s) with status 'Active'."
    table, _ = agents(master, "-fn", "worker2")
    assert sorted(table) == ["003"]
    health = master.control("-i", "more").stdout
    assert "    worker1 (127.0.0.1)\n        Version:" in health
    assert health.split("    worker1 (")[1].split("\n")[3] == "        Active agents: 1"

    # The agent moves to worker2 (a load balancer rebalanced it); worker1's
    # stale status does not take it back.
    time.sleep(0.01)
    keepAlive(w2, "web", "10.0.0.5")
    waitAgents(master, {"001": ("web", "Active", "worker2")}, nodes)
    time.sleep(1.5)  # several agent-info cycles of worker1
    assert agents(master)[0]["001"] == ("web", "Active", "worker2")

    # Removed on the master: its files go from every node.
    removed = manage(master, "-r", "001")
    assert removed.returncode == 0, removed.stderr
    assert not (master.home / "queue" / "agent-info" / "web-10.0.0.5").exists()
    for worker in (w1, w2):
        wait_for(
            lambda: not (worker.home / "queue" / "agent-info" / "web-10.0.0.5").exists()
            and not (worker.home / "queue" / "agent-groups" / "001").exists(),
            f"agent 001's files to leave {worker.node_name}", timeout=20, alive=nodes,
        )
        assert "001 !web 10.0.0.5 " in keysOf(worker)
    assert "001" not in agents(master)[0]

    # An agent added by hand on a worker disappears at the next sync.
    with open(w1.home / "etc" / "client.keys", "a") as f:
        f.write(f"099 rogue any {KEY}\n")
    (w1.home / "queue" / "agent-groups" / "099").write_text("default\n")
    keepAlive(w1, "rogue", "any")
    wait_for(lambda: "rogue" not in keysOf(w1) and not (w1.home / "queue" / "agent-groups" / "099").exists()
             and not (w1.home / "queue" / "agent-info" / "rogue-any").exists(),
             "the hand-added agent to leave worker1", timeout=20, alive=nodes)
    assert "099" not in agents(master)[0]
    for node in nodes:
        node.assert_running()
        assert "Traceback" not in node.log_text(), node.log_text()


def test_statuses_reach_a_restarted_master(cluster: Cluster, tmp_path: Path) -> None:
    """The node of each agent survives a master restart (kill -9 included)."""
    master = cluster.master(options=OPTIONS).start().wait_ready()
    worker = cluster.worker("worker1", options=OPTIONS).start().wait_joined()
    assert manage(master, "-a", "any", "-n", "web").returncode == 0
    wait_for(lambda: " web any " in keysOf(worker), "client.keys to reach the worker", timeout=20,
             alive=[master, worker])
    keepAlive(worker, "web", "any")
    waitAgents(master, {"001": ("web", "Active", "worker1")}, [master, worker])
    master.kill()
    worker.stop()
    master.start().wait_ready()
    # The worker is down: what the master shows comes from what it saved.
    assert agents(master)[0]["001"] == ("web", "Active", "worker1")
