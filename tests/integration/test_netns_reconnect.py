"""
Wazuh issue #1355, for real: a worker loses its network for a few seconds.

The master and the worker run in two network namespaces joined by a veth
pair.  When the worker's link goes down, the worker sees its keep-alives go
unanswered and drops its side of the connection; the master hears nothing
(no FIN, no RST: the link is down) and, with a long
max_allowed_time_without_keepalive, still holds the old connection when the
link comes back.  The worker's new connection must then get in at once
instead of being refused as a duplicate until the master restarts.

Needs root and a working ``ip netns``; skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from wazuhcluster import __version__

from .nodes import FAST_OPTIONS, Cluster, Node, Row, parse_health_more, wazuh_time

OPTIONS = dict(FAST_OPTIONS)
OPTIONS.update(
    {
        "cluster.keep_alive": 0.5,
        "cluster.max_failed_keepalive_attempts": 2,
        "cluster.connection_retry": 0.5,
        # Large: the master must not drop the dead connection by itself.
        "cluster.max_allowed_time_without_keepalive": 60,
    }
)

#: How long the worker's link stays down.
OUTAGE = 3.0


@dataclass(frozen=True)
class Namespaces:
    master: str
    worker: str
    master_veth: str
    worker_veth: str
    master_ip: str
    worker_ip: str


def _ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)} failed: {result.stderr.strip()}")
    return result


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    result = _ip("netns", "list", check=False)
    if result.returncode != 0:
        return f"`ip netns` does not work here: {result.stderr.strip()}"
    return None


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[Namespaces]:
    """
    Two namespaces joined by a veth pair, named after this process; they are
    deleted at the end, after the cluster's processes have been ended.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    pid = os.getpid()
    n = pid % 250 + 1
    ns = Namespaces(
        master=f"wzc-m-{pid}",
        worker=f"wzc-w-{pid}",
        master_veth=f"wzm{pid}",
        worker_veth=f"wzw{pid}",
        master_ip=f"10.213.{n}.1",
        worker_ip=f"10.213.{n}.2",
    )

    def delete() -> None:
        for name in (ns.master, ns.worker):
            _ip("netns", "delete", name, check=False)
        _ip("link", "delete", ns.master_veth, check=False)

    delete()  # leftovers of an earlier run with the same pid
    try:
        try:
            _ip("netns", "add", ns.master)
            _ip("netns", "add", ns.worker)
        except RuntimeError as e:
            pytest.skip(f"cannot create network namespaces: {e}")
        _ip("link", "add", ns.master_veth, "type", "veth", "peer", "name", ns.worker_veth)
        _ip("link", "set", ns.master_veth, "netns", ns.master)
        _ip("link", "set", ns.worker_veth, "netns", ns.worker)
        for name, veth, address in (
            (ns.master, ns.master_veth, ns.master_ip),
            (ns.worker, ns.worker_veth, ns.worker_ip),
        ):
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", veth)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", veth, "up")
        ping = subprocess.run(
            ["ip", "netns", "exec", ns.worker, "ping", "-c", "1", "-W", "5", ns.master_ip],
            capture_output=True,
            text=True,
        ) if shutil.which("ping") else None
        if ping is not None:
            assert ping.returncode == 0, f"the namespaces cannot reach each other:\n{ping.stdout}{ping.stderr}"
        yield ns
    finally:
        cluster.cleanup()
        delete()


def _start_joined(cluster: Cluster, ns: Namespaces) -> tuple[Node, Node]:
    """A master in one namespace, a worker in the other, joined."""
    cluster.port = 1516  # the namespaces are ours alone: Wazuh's own port
    master = cluster.master(
        bind_addr=ns.master_ip, master_address=ns.master_ip, netns=ns.master, options=OPTIONS
    ).start().wait_ready()
    worker = cluster.worker(
        "worker1", master_address=ns.master_ip, netns=ns.worker, options=OPTIONS
    ).start()
    worker.wait_joined()
    expected = [
        Row("master", ns.master_ip, "master", __version__),
        Row("worker1", ns.worker_ip, "worker", __version__),
    ]
    assert master.wait_listed(["master", "worker1"]) == expected
    assert worker.list_nodes() == expected
    return master, worker


def _connected_since(master: Node, name: str) -> float:
    result = master.control("-i", "more")
    assert result.returncode == 0, result.stdout + result.stderr
    _, _, nodes = parse_health_more(result.stdout)
    return wazuh_time(next(n for n in nodes if n.name == name).fields["Connected since"])


def _outage(master: Node, worker: Node, ns: Namespaces, while_down: Callable[[], None] = lambda: None) -> float:
    """
    Take the worker's link down for L{OUTAGE} seconds; check that the worker
    dropped its side and that the master still holds the old connection.
    Returns when the link came back up.
    """
    m, w = master.mark(), worker.mark()
    _ip("-n", ns.worker, "link", "set", ns.worker_veth, "down")
    down = time.monotonic()
    try:
        worker.wait_log("The master stopped answering keep-alives; disconnecting.", since=w, timeout=10)
        worker.wait_log("Lost connection to master. Reconnecting.", since=w)
        assert worker.log_count("not answered by the master", since=w) >= 2
        # The master heard nothing: it still lists the old connection.
        assert master.listed_names() == ["master", "worker1"]
        assert "worker1" not in master.log_since(m)
        while_down()
        time.sleep(max(0.0, down + OUTAGE - time.monotonic()))
        assert master.listed_names() == ["master", "worker1"]
        assert "worker1" not in master.log_since(m)
    finally:
        _ip("-n", ns.worker, "link", "set", ns.worker_veth, "up")
    return time.monotonic()


def _assert_back_at_once(master: Node, worker: Node, m: int, w: int, up: float, expected: list[Row]) -> float:
    """The worker is in again, well before the master's 60 s limit, and stays in."""
    worker.wait_joined(since=w, timeout=20)
    rejoined = time.monotonic() - up
    assert master.wait_listed(["master", "worker1"]) == expected
    assert rejoined < 20, rejoined
    log = master.log_since(m)
    assert len(re.findall(r"Worker worker1 connected from ", log)) == 1, log
    assert "No keep-alive from worker" not in log
    # Its first attempt after the outage got in: never refused as a duplicate.
    assert "already connected" not in worker.log_since(w)
    assert "already connected" not in log
    time.sleep(1.0)
    assert master.listed_names() == ["master", "worker1"]
    assert worker.list_nodes() == expected
    assert "Lost connection" not in worker.log_since(w)[worker.log_since(w).rfind("Successfully connected"):]
    return rejoined


def test_worker_rejoins_after_its_link_was_down(namespaces: Namespaces, cluster: Cluster) -> None:
    """
    The worker's link is down for 3 s, then up again: the worker's new
    connection gets in at once (the master finds the old one dead when it
    asks it, and drops it), instead of being refused as a duplicate.
    """
    ns = namespaces
    master, worker = _start_joined(cluster, ns)
    connected_before = _connected_since(master, "worker1")
    m, w = master.mark(), worker.mark()

    up = _outage(master, worker, ns)

    expected = [
        Row("master", ns.master_ip, "master", __version__),
        Row("worker1", ns.worker_ip, "worker", __version__),
    ]
    rejoined = _assert_back_at_once(master, worker, m, w, up, expected)
    log = master.log_since(m)
    replaced = f"no longer answers; the new connection from {ns.worker_ip} replaces it"
    assert replaced in log or "Worker worker1 disconnected" in log, log
    assert _connected_since(master, "worker1") > connected_before
    print(
        f"worker rejoined {rejoined:.1f} s after its link came back;"
        f" master: {'old connection replaced' if replaced in log else 'old connection reset'}"
    )


def test_worker_back_with_a_new_address_replaces_its_dead_connection(
    namespaces: Namespaces, cluster: Cluster
) -> None:
    """
    As above, but the worker comes back with another address (a DHCP lease
    changed while it was away): nothing answers for the old connection at
    all, not even with a reset, so only the master's own check that the old
    connection no longer answers lets the worker in.
    """
    ns = namespaces
    master, worker = _start_joined(cluster, ns)
    m, w = master.mark(), worker.mark()
    new_ip = ns.worker_ip.rsplit(".", 1)[0] + ".3"

    def readdress() -> None:
        _ip("-n", ns.worker, "addr", "del", f"{ns.worker_ip}/24", "dev", ns.worker_veth)
        _ip("-n", ns.worker, "addr", "add", f"{new_ip}/24", "dev", ns.worker_veth)

    up = _outage(master, worker, ns, readdress)

    expected = [
        Row("master", ns.master_ip, "master", __version__),
        Row("worker1", new_ip, "worker", __version__),
    ]
    _assert_back_at_once(master, worker, m, w, up, expected)
    log = master.log_since(m)
    assert (
        f"Worker worker1: its connection from {ns.worker_ip} no longer answers;"
        f" the new connection from {new_ip} replaces it." in log
    ), log
    # The old connection did not go by itself first: it was replaced.
    assert log.index("replaces it") < log.index(f"Worker worker1 connected from {new_ip}")
    assert "Worker worker1 disconnected" not in log.split("replaces it")[0], log
