"""
Attacks on the cluster port (issue 12, items 2, 6 and 7), against real
twistd nodes over real TLS on the loopback:

 - strangers (TLS done, the key never proved) streaming an unterminated AMP
   box, from many source addresses (127.0.0.2, ...): each is closed at once,
   the caps on unauthenticated connections hold, the master's memory stays
   flat, and the worker keeps its connection and receives a rule edited
   during the attack;
 - strangers holding connections open in silence: over the per-address cap
   they are closed at once, and a worker still joins meanwhile;
 - a flood of pre-proof Authenticate boxes lacking their argument: one
   WARNING line per address, no traceback, and cluster.log rotated by size
   with a bounded number of old files;
 - a worker holding the key but with an invented name, or one too many:
   refused with a clear reason, one line naming it;
 - a worker sending an agent status dated 2100: refused, and the agent's
   real status still wins afterwards.

Every loop is bounded in count, every wait in time.  The strangers are the
standard library's (L{tests.support.strangers}), not the project's code.
"""

from __future__ import annotations

import time

from lab.nodes import Cluster, FAST_OPTIONS, Node, wait_for
from lab.trees import AGENT_OPTIONS, client_keys, control_agents, md5_file, put
from tests.support import strangers
from wazuhcluster.agents.agentinfo import writeAgentInfo

#: Small caps, so that a test trips them with few connections.
CAPS: dict[str, float | int | str] = {
    "cluster.max_unauthenticated_connections": 24,
    "cluster.max_unauthenticated_per_address": 6,
}

#: Fast integrity cycles (a rule edited on the master reaches the worker in seconds).
SYNC_OPTIONS: dict[str, float | int | str] = {
    **FAST_OPTIONS,
    "cluster.sync_integrity": 1,
    "cluster.recalculate_integrity": 1,
    "cluster.handshake_timeout": 8,
    **CAPS,
}

#: Most the master's resident memory may grow while strangers stream junk
#: (before the fix, each accepted connection held up to 4 MiB, and nothing
#: capped their number: the 60 below held 60 MiB and more).
MEMORY_GROWTH_LIMIT_KB = 16 * 1024



def rss_kb(node: Node) -> int:
    assert node.process is not None
    return strangers.process_memory_kb(node.process.pid)[0]


def no_traceback(node: Node) -> None:
    text = node.log_text()
    assert "Traceback" not in text and "CRITICAL" not in text, text[-3000:]


def start(cluster: Cluster, options: dict, *workers: str) -> tuple[Node, list[Node]]:
    master = cluster.master(options=options).start().wait_ready()
    started = [cluster.worker(name, options=options).start() for name in workers]
    for worker in started:
        worker.wait_joined()
    return master, started


def test_junk_streams_are_cut_off(cluster: Cluster) -> None:
    """
    60 strangers from 10 addresses each try to stream 1 MiB of one
    unterminated box.  Each is closed before it can make the master hold
    more than a few KiB; the caps refuse the rest at once.  The master's
    memory stays flat, and the worker neither loses its connection nor
    misses a rule edited during the attack.
    """
    master, [worker] = start(cluster, SYNC_OPTIONS, "node02")
    mark, workerMark = master.mark(), worker.mark()
    time.sleep(1)  # let the first syncs settle before measuring
    before = rss_kb(master)
    sockets = []
    for address in strangers.source_addresses(10):
        for _ in range(6):
            try:
                sockets.append(strangers.connect(cluster.port, address))
            except OSError:
                pass  # closed at once by a cap, during the TLS handshake
    rule = put(master.home, "etc/rules/attack_rule.xml", "<group name='during-attack'/>\n")
    try:
        for piece in (p for _ in range(16) for p in strangers.unterminated_box(64 * 1024)):
            for sock in list(sockets):
                if not strangers.send_piece(sock, piece, timeout=2):
                    sockets.remove(sock)
            if not sockets:
                break
        still_open = [s for s in sockets if not strangers.closed_by_peer(s, timeout=5)]
        assert still_open == [], f"{len(still_open)} strangers still connected after streaming junk"
        grown = rss_kb(master) - before
        assert grown < MEMORY_GROWTH_LIMIT_KB, f"the master grew by {grown} kB"
    finally:
        for sock in sockets:
            strangers.close(sock)
    wait_for(lambda: md5_file(worker.home / "etc/rules/attack_rule.xml") == rule
             if (worker.home / "etc/rules/attack_rule.xml").exists() else False,
             "the rule edited during the attack to reach the worker", timeout=20, alive=[master, worker])
    assert worker.log_count("Lost connection", workerMark) == 0
    assert master.log_count("Worker node02 connected", mark) == 0
    drops = master.log_lines("Dropping connection with 127.0.0.", mark)
    assert 1 <= len(drops) <= 10, drops
    assert all("before proving the cluster key" in line for line in drops), drops
    no_traceback(master)


def test_silent_strangers_are_capped_per_address(cluster: Cluster) -> None:
    """
    20 silent connections from one address: the first 6 wait for the
    handshake timeout, the other 14 are closed at once with one WARNING;
    a worker starting meanwhile joins.
    """
    master, _ = start(cluster, SYNC_OPTIONS)
    mark = master.mark()
    sockets = []
    refused = 0
    for _ in range(20):
        try:
            sockets.append(strangers.connect(cluster.port, "127.0.0.9"))
        except OSError:
            refused += 1
    try:
        closed = refused + sum(strangers.closed_by_peer(s, timeout=0.5) for s in sockets)
        assert closed == 14, closed
        worker = cluster.worker("node03", options=SYNC_OPTIONS).start()
        worker.wait_joined()
        lines = master.log_lines("cluster.max_unauthenticated_per_address", mark)
        assert len(lines) == 1 and "127.0.0.9" in lines[0], lines
    finally:
        for sock in sockets:
            strangers.close(sock)
    no_traceback(master)


def test_authenticate_flood_is_quiet_and_the_log_rotates(cluster: Cluster) -> None:
    """
    300 pre-proof Authenticate boxes without their nonce, from 60 addresses:
    at most one WARNING line per address, no traceback (before the fix:
    a CRITICAL and 15 lines of traceback each).  With a 4 KiB rotation
    size and 2 old files, cluster.log rotates and never more than three
    files exist.
    """
    options = {**SYNC_OPTIONS, "cluster.log_rotate_bytes": 4096, "cluster.log_rotated_files": 2}
    master, _ = start(cluster, options)
    addresses = strangers.source_addresses(60)
    deadline = time.monotonic() + 60
    for round_ in range(5):
        for address in addresses:
            assert time.monotonic() < deadline, "the flood took too long"
            sock = strangers.connect(cluster.port, address)
            try:
                strangers.send_piece(sock, strangers.authenticate_without_nonce(), timeout=2)
                assert strangers.closed_by_peer(sock, timeout=5)
            finally:
                strangers.close(sock)
    logs = master.home / "logs"
    wait_for(lambda: (logs / "cluster.log.1").exists(), "cluster.log to rotate", alive=[master])
    names = sorted(p.name for p in logs.iterdir() if p.name.startswith("cluster.log"))
    assert names == ["cluster.log", "cluster.log.1", "cluster.log.2"], names
    text = "".join((logs / name).read_text() for name in names)
    assert "Traceback" not in text and "CRITICAL" not in text
    warnings = [line for line in text.splitlines() if "lacks the argument 'worker_nonce'" in line]
    # The oldest lines are gone with the rotation: at most one per address remains.
    assert 0 < len(warnings) <= len(addresses), len(warnings)
    for path in logs.iterdir():
        assert path.stat().st_size < 4096 + 512, path


def test_invented_and_surplus_workers_are_refused(cluster: Cluster) -> None:
    """
    With an allow-list of node02, node03, node04 and at most two workers:
    an invented name is refused for its name, node04 for the number; the
    two allowed workers stay connected.  Each refusal is logged on the
    master in one line naming the peer, not once per retry.
    """
    options = {
        **SYNC_OPTIONS,
        "cluster.allowed_workers": "node02,node03,node04",
        "cluster.max_workers": 2,
    }
    master, (node02, node03) = start(cluster, options, "node02", "node03")
    mark = master.mark()
    invented = cluster.worker("invented", options=options).start()
    surplus = cluster.worker("node04", options=options).start()
    invented.wait_log("is not in the master's cluster.allowed_workers")
    surplus.wait_log("the most cluster.max_workers allows")
    time.sleep(3)  # several retries of each
    for name in ("invented", "node04"):
        lines = master.log_lines(f"(node {name})", mark)
        assert len(lines) == 1 and "127.0.0.1" in lines[0], lines
    assert sorted(row.name for row in master.list_nodes()) == ["master", "node02", "node03"]
    no_traceback(master)


def test_agent_status_from_the_future(cluster: Cluster) -> None:
    """
    A worker's status dated 2100-01-01 is refused (it would keep the agent
    Active for ever); a real one sent after it is taken.
    """
    options = {**AGENT_OPTIONS, **CAPS}
    master = cluster.master(options=options)
    put(master.home, "etc/client.keys", client_keys([("001", "web", "10.0.0.5")]))
    master.start().wait_ready()
    worker = cluster.worker("node02", options=options).start().wait_joined()
    mark = master.mark()
    writeAgentInfo(str(worker.home), "web", "10.0.0.5", when=4102444800.0)
    line = master.wait_log("Refused 1 agent statuses from worker node02", since=mark)
    assert "web-10.0.0.5" in line
    copy = master.home / "queue/agent-info/web-10.0.0.5"
    assert not copy.exists() or copy.stat().st_mtime < time.time() + 120
    writeAgentInfo(str(worker.home), "web", "10.0.0.5")
    wait_for(lambda: control_agents(master)[0].get("001", ("", "", ""))[1:] == ("Active", "node02"),
             "the agent's real status to reach the master", alive=[master, worker])
    no_traceback(master)
