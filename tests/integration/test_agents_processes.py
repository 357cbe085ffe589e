"""
Agents across a real cluster (processes on loopback): registration on the
master reaches every worker, statuses written on the workers reach the
master with their node, and a removed agent's files go from every node.
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.trees import AGENT_OPTIONS as OPTIONS
from lab.trees import agent_keep_alive, client_keys_of, control_agents, manage

from .nodes import Cluster, Node, wait_for

KEY = "e" * 64


def waitAgents(node: Node, wanted: dict[str, tuple[str, str, str]], alive: list[Node]) -> None:
    last: list[object] = [None]

    def matches() -> bool:
        table, _ = control_agents(node)
        last[0] = table
        return all(table.get(k) == v for k, v in wanted.items())

    try:
        wait_for(matches, f"cluster_control -a on {node.node_name} to show {wanted}", timeout=20, alive=alive)
    except AssertionError as e:
        raise AssertionError(f"{e}; last shown: {last[0]}") from None


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
        wait_for(lambda: client_keys_of(worker) == client_keys_of(master), f"client.keys to reach {worker.node_name}",
                 timeout=20, alive=nodes)
        assert (worker.home / "queue" / "agent-groups" / "004").read_text() == "default\n"

    # Statuses written on two workers appear on the master, with node and status.
    agent_keep_alive(w1, "web", "10.0.0.5")
    agent_keep_alive(w1, "db", "any", "--age", "7200")
    agent_keep_alive(w2, "mail", "10.0.0.7", "--pending")
    agent_keep_alive(w2, "ghost", "10.9.9.9")  # not registered: ignored by the master
    waitAgents(master, {
        "001": ("web", "Active", "worker1"),
        "002": ("db", "Disconnected", "worker1"),
        "003": ("mail", "Pending", "worker2"),
        "004": ("spare", "Never connected", "unknown"),
        "000": (control_agents(master)[0]["000"][0], "Active", "master"),
    }, nodes)
    assert not (master.home / "queue" / "agent-info" / "ghost-10.9.9.9").exists()
    assert (master.home / "queue" / "agent-info" / "web-10.0.0.5").read_bytes() == (
        w1.home / "queue" / "agent-info" / "web-10.0.0.5"
    ).read_bytes()

    # A worker asks the master; filters as Wazuh's.
    table, last = control_agents(w2)
    assert table["001"] == ("web", "Active", "worker1") and last == "Listing 5 agent(s)."
    table, last = control_agents(master, "-fs", "Active")
    assert sorted(table) == ["000", "001"] and last == "Found 2 agent(s) with status 'Active'."
    table, _ = control_agents(master, "-fn", "worker2")
    assert sorted(table) == ["003"]
    health = master.control("-i", "more").stdout
    assert "    worker1 (127.0.0.1)\n        Version:" in health
    assert health.split("    worker1 (")[1].split("\n")[3] == "        Active agents: 1"

    # The agent moves to worker2 (a load balancer rebalanced it); worker1's
    # stale status does not take it back.
    time.sleep(0.01)
    agent_keep_alive(w2, "web", "10.0.0.5")
    waitAgents(master, {"001": ("web", "Active", "worker2")}, nodes)
    time.sleep(1.5)  # several agent-info cycles of worker1
    assert control_agents(master)[0]["001"] == ("web", "Active", "worker2")

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
        assert "001 !web 10.0.0.5 " in client_keys_of(worker)
    assert "001" not in control_agents(master)[0]

    # An agent added by hand on a worker disappears at the next sync.  Its
    # status is written first: the helper is a new Python process, which on
    # a loaded machine could finish after the sync that the client.keys
    # line below starts.
    agent_keep_alive(w1, "rogue", "any")
    with open(w1.home / "etc" / "client.keys", "a") as f:
        f.write(f"099 rogue any {KEY}\n")
    (w1.home / "queue" / "agent-groups" / "099").write_text("default\n")
    wait_for(lambda: "rogue" not in client_keys_of(w1) and not (w1.home / "queue" / "agent-groups" / "099").exists()
             and not (w1.home / "queue" / "agent-info" / "rogue-any").exists(),
             "the hand-added agent to leave worker1", timeout=20, alive=nodes)
    assert "099" not in control_agents(master)[0]
    for node in nodes:
        node.assert_running()
        assert "Traceback" not in node.log_text(), node.log_text()


def test_statuses_reach_a_restarted_master(cluster: Cluster, tmp_path: Path) -> None:
    """The node of each agent survives a master restart (kill -9 included)."""
    master = cluster.master(options=OPTIONS).start().wait_ready()
    worker = cluster.worker("worker1", options=OPTIONS).start().wait_joined()
    assert manage(master, "-a", "any", "-n", "web").returncode == 0
    wait_for(lambda: " web any " in client_keys_of(worker), "client.keys to reach the worker", timeout=20,
             alive=[master, worker])
    agent_keep_alive(worker, "web", "any")
    waitAgents(master, {"001": ("web", "Active", "worker1")}, [master, worker])
    master.kill()
    worker.stop()
    master.start().wait_ready()
    # The worker is down: what the master shows comes from what it saved.
    assert control_agents(master)[0]["001"] == ("web", "Active", "worker1")
