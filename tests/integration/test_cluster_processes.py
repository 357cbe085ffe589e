"""
End-to-end tests with real processes: a master and workers started with
``twistd -n wazuhcluster`` on 127.0.0.1, questioned with ``cluster_control``,
killed, frozen and restarted.  Plain synchronous pytest functions: every
wait is a bounded poll (see L{nodes}).
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from wazuhcluster import __version__

from .nodes import (
    FAST_OPTIONS,
    Cluster,
    Node,
    Row,
    cluster_xml,
    free_port,
    never,
    new_key,
    ossec_conf,
    parse_health_more,
    parse_table,
    port_is_bindable,
    run_control,
    run_twistd,
    wait_for,
    wazuh_time,
)

HANDSHAKE_TIMEOUT = float(FAST_OPTIONS["cluster.handshake_timeout"])
KEEPALIVE_LIMIT = float(FAST_OPTIONS["cluster.max_allowed_time_without_keepalive"])
CHECK_PERIOD = float(FAST_OPTIONS["cluster.check_worker_lastkeepalive"])


def rows(*names: str) -> list[Row]:
    """What ``-l`` should print for a master named C{names[0]} and its workers, on 127.0.0.1."""
    return [
        Row(name, "127.0.0.1", "master" if i == 0 else "worker", __version__)
        for i, name in enumerate(names)
    ]


def health_more(node: Node) -> tuple[str, int, dict[str, dict[str, str]]]:
    result = node.control("-i", "more")
    assert result.returncode == 0, result.stdout + result.stderr
    name, count, nodes = parse_health_more(result.stdout)
    return name, count, {n.name: {"address": n.address, **n.fields} for n in nodes}


# 1. ------------------------------------------------------------------------


def test_master_and_two_workers_join(cluster: Cluster) -> None:
    """
    A master and two workers form a cluster; ``cluster_control`` shows it
    the same from the master's home and from each worker's home (there the
    worker asks the master).
    """
    master = cluster.start_master()
    worker1, worker2 = cluster.start_workers("worker1", "worker2")

    assert master.wait_listed(["master", "worker1", "worker2"]) == rows("master", "worker1", "worker2")
    for worker in (worker1, worker2):
        assert worker.list_nodes() == rows("master", "worker1", "worker2")
        assert master.log_lines(f"Worker {worker.node_name} connected from 127.0.0.1 (version {__version__})")
        assert worker.log_lines("Successfully connected to master master (127.0.0.1:")

    # -i more: the cluster's name, the master's start, each worker's keep-alives.
    name, count, nodes = health_more(master)
    assert (name, count, list(nodes)) == (cluster.name, 3, ["master", "worker1", "worker2"])
    assert nodes["master"]["Type"] == "master"
    assert nodes["master"]["Version"] == __version__
    assert abs(wazuh_time(nodes["master"]["Running since"]) - time.time()) < 60
    first: dict[str, float] = {}
    for worker in ("worker1", "worker2"):
        fields = nodes[worker]
        assert fields["address"] == "127.0.0.1"
        assert fields["Type"] == "worker"
        assert fields["Last keep alive"] != "n/a", fields
        first[worker] = wazuh_time(fields["Last keep alive"])
        assert wazuh_time(fields["Connected since"]) <= first[worker] <= time.time() + 1
        assert time.time() - first[worker] < 10, fields
    # The keep-alives keep coming (every 0.5 s): the shown time moves on.
    def moved_on() -> bool:
        _, _, later = health_more(master)
        return all(wazuh_time(later[w]["Last keep alive"]) > first[w] for w in first)

    wait_for(moved_on, "the workers' last keep-alive to move on", timeout=10, interval=0.3)
    # The same health, asked of a worker (forwarded to the master).
    name, count, nodes = health_more(worker2)
    assert (name, count, list(nodes)) == (cluster.name, 3, ["master", "worker1", "worker2"])
    assert all(nodes[w]["Last keep alive"] != "n/a" for w in ("worker1", "worker2"))

    # -fn: known names filter, unknown ones are named and make the exit status 1.
    result = master.control("-l", "-fn", "worker1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_table(result.stdout) == rows("master", "worker1")[1:]
    # Only unknown names: the error alone, on stderr (no empty table).
    result = master.control("-l", "-fn", "nosuchnode")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Error: node 'nosuchnode' is not connected to the cluster.\n"
    result = worker1.control("-l", "-fn", "worker2", "ghost")
    assert result.returncode == 1
    assert parse_table(result.stdout) == rows("master", "worker2")[1:]
    assert result.stderr == "Error: node 'ghost' is not connected to the cluster.\n"
    result = master.control("-i", "-fn", "ghost")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Error: node 'ghost' is not connected to the cluster.\n"
    # The count is that of the nodes listed.
    result = master.control("-i", "more", "-fn", "worker1")
    assert result.returncode == 0, result.stdout + result.stderr
    name, count, nodes = parse_health_more(result.stdout)
    assert (count, [n.name for n in nodes]) == (1, ["worker1"])


# 2. ------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _served_certificate(port: int) -> bytes:
    """The DER certificate the master presents on its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def test_tls_files_control_socket_and_single_instance(cluster: Cluster) -> None:
    """
    Each node makes its own key (0600) and self-signed certificate (0640)
    under HOME/etc, opens its control socket with mode 0660, and a second
    daemon on the same HOME is refused while the first keeps running.
    """
    master = cluster.start_master()
    (worker,) = cluster.start_workers("worker1")
    master.wait_listed(["master", "worker1"])

    files: dict[str, tuple[bytes, bytes]] = {}
    for node in (master, worker):
        assert _mode(node.node_key) == 0o600, oct(_mode(node.node_key))
        assert _mode(node.node_cert) == 0o640, oct(_mode(node.node_cert))
        assert stat.S_ISSOCK(node.control_socket.stat().st_mode)
        assert _mode(node.control_socket) == 0o660, oct(_mode(node.control_socket))
        certificate = x509.load_pem_x509_certificate(node.node_cert.read_bytes())
        key = serialization.load_pem_private_key(node.node_key.read_bytes(), None)
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node.node_name
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [node.node_name]
        assert key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        files[node.node_name] = (node.node_key.read_bytes(), node.node_cert.read_bytes())

    # The master really serves the certificate it wrote.
    served = _served_certificate(master.port)
    assert served == x509.load_pem_x509_certificate(master.node_cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )

    # A second daemon on the same home is refused, and leaves the first alone.
    worker_mark = worker.mark()
    for node in (master, worker):
        pid = node.process.pid
        assert node.pid_file.read_text().strip() == str(pid)
        result, took = run_twistd(node.conf, node.home)
        assert result.returncode != 0, result.stdout + result.stderr
        assert "already running" in result.stderr and str(pid) in result.stderr, result.stderr
        assert took < 10
        assert node.running()
        assert node.pid_file.read_text().strip() == str(pid)
        assert (node.node_key.read_bytes(), node.node_cert.read_bytes()) == files[node.node_name]
        assert node.control_socket_answers()
    assert master.list_nodes() == rows("master", "worker1")
    assert worker.list_nodes() == rows("master", "worker1")
    assert "Lost connection" not in worker.log_since(worker_mark)


# 3. ------------------------------------------------------------------------


def test_refused_workers_are_logged_on_both_sides_and_never_listed(cluster: Cluster) -> None:
    """
    A worker with the wrong key, one of another cluster, one named like a
    connected worker and one named like the master are refused: both sides
    log why, they keep retrying, and none of them is ever listed.
    """
    master = cluster.start_master()
    (worker1,) = cluster.start_workers("worker1")
    master.wait_listed(["master", "worker1"])
    m, w = master.mark(), worker1.mark()

    wrong_key = cluster.worker("badkey", key=new_key()).start()
    other_cluster = cluster.worker("stranger", cluster_name="othercluster").start()
    duplicate = cluster.worker("worker1", home="dup").start()
    masters_name = cluster.worker("master", home="own").start()

    # Each worker logs every attempt; the master logs each reason once a
    # minute per address (and node name): retries do not fill its log.
    refused = "Could not connect to master: the master refused the connection: "
    wrong_key.wait_log(refused + "wrong cluster key", count=2)
    other_cluster.wait_log(
        refused + "it belongs to cluster 'othercluster' and this master to 'wazuh'", count=2
    )
    duplicate.wait_log(refused + "a node named 'worker1' is already connected from 127.0.0.1", count=2)
    masters_name.wait_log(refused + "its node name 'master' is the master's own name", count=2)
    for text in (
        re.compile(
            r"WARNING: \[Master\] \[Handshake\] Refused connection from 127\.0\.0\.1:\d+: "
            r"it failed to prove it holds the cluster key"
        ),
        "(node stranger): it belongs to cluster 'othercluster' and this master to 'wazuh'",
        "(node worker1): a node named 'worker1' is already connected",
        "(node master): its node name 'master' is the master's own name",
    ):
        master.wait_log(text, since=m)
        found = text.findall(master.log_since(m)) if isinstance(text, re.Pattern) else master.log_lines(text, m)
        assert len(found) == 1, found

    # None is ever listed, from any side; the first worker1 stays, untouched.
    never(
        lambda: master.listed_names() != ["master", "worker1"],
        "a refused worker being listed (or worker1 dropped)",
        duration=2.0,
    )
    assert worker1.list_nodes() == rows("master", "worker1")
    assert "Lost connection" not in worker1.log_since(w)
    assert master.log_count("Worker worker1 connected from", since=m) == 0
    assert "replaces it" not in master.log_since(m)
    assert "disconnected" not in master.log_since(m)
    for node in (wrong_key, other_cluster, duplicate, masters_name):
        assert node.running()
        assert "Successfully connected" not in node.log_text()
        result = node.control("-l")
        assert result.returncode == 1
        assert "Error: this worker is not connected to the master; try again later." in result.stderr


# 4. ------------------------------------------------------------------------


def test_workers_rejoin_a_restarted_master(cluster: Cluster) -> None:
    """
    The master is killed with SIGKILL and started again on the same port:
    both workers notice, say they are not connected meanwhile, and rejoin by
    themselves.
    """
    master = cluster.start_master()
    workers = cluster.start_workers("worker1", "worker2")
    master.wait_listed(["master", "worker1", "worker2"])
    certificate = master.node_cert.read_bytes()
    marks = [w.mark() for w in workers]

    master.kill()
    for worker, mark in zip(workers, marks):
        worker.wait_log("ERROR: [Worker %s] [Main] Lost connection to master. Reconnecting." % worker.node_name, since=mark)
    assert port_is_bindable(master.port)
    for worker in workers:
        result = worker.control("-l")
        assert result.returncode == 1
        assert "Error: this worker is not connected to the master; try again later." in result.stderr
    # Let the workers fail a few attempts against the closed port.
    time.sleep(1.0)
    assert all(w.running() for w in workers)
    assert all("Successfully connected" not in w.log_since(m) for w, m in zip(workers, marks))

    master_mark = master.mark()
    master.start().wait_ready()
    master.wait_log("Starting master node master of cluster wazuh", since=master_mark)
    assert master.wait_listed(["master", "worker1", "worker2"], timeout=15) == rows(
        "master", "worker1", "worker2"
    )
    for worker, mark in zip(workers, marks):
        worker.wait_joined(since=mark)
        assert worker.list_nodes() == rows("master", "worker1", "worker2")
    assert master.node_cert.read_bytes() == certificate, "the restarted master made a new certificate"


# 5. ------------------------------------------------------------------------


def test_killed_worker_is_dropped_and_rejoins_at_once(cluster: Cluster) -> None:
    """
    A worker killed with SIGKILL disappears from the list (connection reset,
    or at the latest the keep-alive limit); started again with the same name
    it joins at once.
    """
    master = cluster.start_master()
    worker1, worker2 = cluster.start_workers("worker1", "worker2")
    master.wait_listed(["master", "worker1", "worker2"])
    m, w2 = master.mark(), worker2.mark()

    worker1.kill()
    killed = time.monotonic()
    master.wait_listed(["master", "worker2"], timeout=KEEPALIVE_LIMIT + CHECK_PERIOD + 5)
    assert time.monotonic() - killed < KEEPALIVE_LIMIT + CHECK_PERIOD + 5
    dropped = master.log_since(m)
    assert (
        "Worker worker1 disconnected" in dropped or "No keep-alive from worker worker1" in dropped
    ), dropped

    mark = worker1.mark()
    restarted = time.monotonic()
    worker1.start()
    worker1.wait_joined(since=mark, timeout=10)
    master.wait_listed(["master", "worker1", "worker2"], timeout=5)
    assert time.monotonic() - restarted < 8
    assert "already connected" not in worker1.log_since(mark)
    assert "Could not connect to master" not in worker1.log_since(mark)
    assert "Lost connection" not in worker2.log_since(w2)
    assert worker2.list_nodes() == rows("master", "worker1", "worker2")


def test_frozen_worker_is_dropped_after_the_keepalive_limit(cluster: Cluster) -> None:
    """
    A worker frozen with SIGSTOP keeps its TCP connection open but sends no
    keep-alive: the master drops it after max_allowed_time_without_keepalive,
    and once thawed the worker reconnects by itself.
    """
    master = cluster.start_master()
    (worker1,) = cluster.start_workers("worker1")
    master.wait_listed(["master", "worker1"])
    m, w = master.mark(), worker1.mark()

    worker1.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        master.wait_listed(["master"], timeout=KEEPALIVE_LIMIT + CHECK_PERIOD + 5)
        took = time.monotonic() - frozen
        line = master.wait_log("No keep-alive from worker worker1 for", since=m)
        assert "WARNING" in line and f"(limit {KEEPALIVE_LIMIT}" in line, line
        # Not at once: the connection itself stayed open.
        assert took >= KEEPALIVE_LIMIT - float(FAST_OPTIONS["cluster.keep_alive"]) - 0.6, took
    finally:
        worker1.signal(signal.SIGCONT)

    worker1.wait_log("Lost connection to master. Reconnecting.", since=w)
    worker1.wait_joined(since=w)
    assert master.wait_listed(["master", "worker1"]) == rows("master", "worker1")


def test_new_connection_replaces_one_that_no_longer_answers(cluster: Cluster) -> None:
    """
    Wazuh issue #1355 without network tricks: the master never drops silent
    workers by itself here (limit 60 s); worker1 is frozen, and a new worker1
    connects.  The master pings the old connection, gets no answer, and lets
    the new one in at once.  The old process, thawed, is then the duplicate.
    """
    options = dict(FAST_OPTIONS)
    options["cluster.max_allowed_time_without_keepalive"] = 60
    master = cluster.start_master(options=options)
    (old,) = cluster.start_workers("worker1")
    master.wait_listed(["master", "worker1"])
    m, o = master.mark(), old.mark()

    old.signal(signal.SIGSTOP)
    try:
        new = cluster.worker("worker1", home="w1new").start()
        started = time.monotonic()
        new.wait_joined(timeout=10)
        assert time.monotonic() - started < 8
        master.wait_log(
            re.compile(
                r"WARNING: .*Worker worker1: its connection from 127\.0\.0\.1 no longer answers;"
                r" the new connection from 127\.0\.0\.1 replaces it\."
            ),
            since=m,
        )
        master.wait_listed(["master", "worker1"])
        assert "No keep-alive from worker" not in master.log_since(m)
        assert "already connected" not in new.log_text()
    finally:
        old.signal(signal.SIGCONT)

    # The thawed process finds its connection gone, and is refused as a duplicate.
    old.wait_log("Lost connection to master. Reconnecting.", since=o)
    old.wait_log("a node named 'worker1' is already connected", since=o, count=2)
    n = new.mark()
    never(lambda: master.listed_names() != ["master", "worker1"], "worker1 missing", duration=1.0)
    assert "Lost connection" not in new.log_since(n)
    assert master.log_count("Worker worker1 connected from", since=m) == 1
    assert new.list_nodes() == rows("master", "worker1")


# 6. ------------------------------------------------------------------------


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def _bad_configs(port: int, key: str) -> dict[str, tuple[str, str, list[str]]]:
    """Case -> (ossec.conf text, the text the error must name it by, other words it must say)."""

    def section(**changes: object) -> str:
        values: dict[str, object] = dict(
            name="wazuh", node_name="node01", key=key, node_type="master", port=port, nodes=["127.0.0.1"]
        )
        values.update(changes)
        return cluster_xml(**values)  # type: ignore[arg-type]

    broken = ossec_conf(section()).replace("<hidden>no</hidden>", "<hidden>no</hiden>")
    return {
        "key-of-31-chars": (ossec_conf(section(key=key[:31])), "<key>", ["31 characters", "32"]),
        "port-80": (ossec_conf(section(port=80)), "<port>", ["'80'", "1025"]),
        "broken-xml": (broken, "XML does not parse", [f"line {_line_of(broken, '</hiden>')}"]),
        "node-ip-placeholder": (
            ossec_conf(section(node_name="worker1", node_type="worker", nodes=["NODE_IP"])),
            "<node>",
            ["placeholder", "'NODE_IP'"],
        ),
    }


@pytest.mark.parametrize(
    "case", ["key-of-31-chars", "port-80", "broken-xml", "node-ip-placeholder"]
)
def test_configuration_error_stops_the_node_with_one_line(tmp_path: Path, case: str) -> None:
    port = free_port()
    text, names, words = _bad_configs(port, new_key())[case]
    home = tmp_path / "h"
    (home / "etc").mkdir(parents=True)
    conf = home / "etc" / "ossec.conf"
    conf.write_text(text)
    port80_was_free = port_is_bindable(80)

    result, took = run_twistd(conf, home)

    assert result.returncode != 0
    assert took < 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("wazuh-clusterd: CRITICAL: "), line
    assert str(conf) in line and names in line, line
    for word in words:
        assert word in line, line
    if names in ("<key>", "<port>", "<node>"):
        element = "<node>NODE_IP" if names == "<node>" else names
        assert f"{conf}:{_line_of(text, element)}:" in line, line
    # Nothing was started: no log, no control socket, no port.
    assert result.stdout == ""
    assert not (home / "queue").exists()
    assert not (home / "logs").exists()
    assert port_is_bindable(port)
    if case == "port-80" and port80_was_free:
        assert port_is_bindable(80)


def test_disabled_cluster_exits_zero_and_control_says_not_running(tmp_path: Path) -> None:
    """
    Wazuh's stock, disabled section (empty key, NODE_IP): the daemon says
    the cluster is disabled and exits 0; cluster_control says it is not running.
    """
    port = free_port()
    home = tmp_path / "h"
    (home / "etc").mkdir(parents=True)
    conf = home / "etc" / "ossec.conf"
    conf.write_text(
        ossec_conf(
            cluster_xml(
                name="wazuh",
                node_name="node01",
                key="",
                node_type="master",
                port=port,
                nodes=["NODE_IP"],
                bind_addr="0.0.0.0",
                disabled="yes",
            )
        )
    )
    result, took = run_twistd(conf, home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 10
    assert "Cluster disabled" in result.stdout + result.stderr
    assert not (home / "queue").exists()
    assert port_is_bindable(port, "0.0.0.0")

    control = run_control(home, "-l")
    assert control.returncode == 1
    assert control.stdout == ""
    assert control.stderr.strip() == "Cluster is not running."


def test_control_without_a_running_daemon(cluster: Cluster) -> None:
    """
    cluster_control against an enabled home whose daemon is not running
    (never started, or killed and its socket file left behind) says so.
    """
    never_started = cluster.master(home="m0")
    expected = (
        f"Error: cannot reach the cluster daemon at {never_started.control_socket}: is it running?"
    )
    for action in (["-l"], ["-i"]):
        result = never_started.control(*action)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.strip() == expected

    killed = cluster.start_master(home="m1")
    killed.kill()
    assert killed.control_socket.exists(), "SIGKILL should leave the socket file behind"
    result = killed.control("-l")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"Error: cannot reach the cluster daemon at {killed.control_socket}: is it running?"
    )
    # And the killed node starts again over its leftovers.
    killed.start().wait_ready()
    assert killed.list_nodes() == rows("master")


# 7. ------------------------------------------------------------------------


def _closed_within(sock: socket.socket, opened: float, timeout: float) -> float:
    """Wait for the peer to close C{sock}; how long after C{opened} it did."""
    sock.settimeout(max(0.1, opened + timeout - time.monotonic()))
    try:
        while True:
            data = sock.recv(4096)
            if data == b"":
                break
            if not isinstance(sock, ssl.SSLSocket):
                raise AssertionError(f"the master sent {data!r} on a connection that never spoke")
    except TimeoutError:
        raise AssertionError(f"the master left a silent connection open for {timeout} s") from None
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - opened


def test_silent_connections_are_closed_after_the_handshake_timeout(cluster: Cluster) -> None:
    """
    TCP connections that never say a word (a port scan, a half-open socket),
    and one that completes TLS and then stays silent, are closed by the
    master after handshake_timeout; the cluster carries on.
    """
    master = cluster.start_master()
    (worker1,) = cluster.start_workers("worker1")
    master.wait_listed(["master", "worker1"])
    w = worker1.mark()

    silent = []
    for _ in range(5):
        silent.append((socket.create_connection(("127.0.0.1", master.port), timeout=10), time.monotonic()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls_opened = time.monotonic()
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", master.port), timeout=10))
    silent.append((tls, tls_opened))
    try:
        for sock, opened in silent:
            took = _closed_within(sock, opened, HANDSHAKE_TIMEOUT + 3)
            assert HANDSHAKE_TIMEOUT - 0.5 <= took <= HANDSHAKE_TIMEOUT + 3, took
    finally:
        for sock, _ in silent:
            sock.close()

    # The cluster still works: worker1 untouched, and a new worker joins.
    assert master.list_nodes() == rows("master", "worker1")
    assert "Lost connection" not in worker1.log_since(w)
    cluster.start_workers("worker2")
    assert master.wait_listed(["master", "worker1", "worker2"]) == rows("master", "worker1", "worker2")


# 8. ------------------------------------------------------------------------


def test_old_style_configuration_starts_with_warnings(cluster: Cluster) -> None:
    """
    A Wazuh 3.x style section (``<interval>``, every node in ``<nodes>``,
    ``client`` for worker) still works; the log says what to change.
    """
    interval = "    <interval>2m</interval>\n"
    everyone = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]

    def old(node_name: str, node_type: str) -> str:
        return ossec_conf(
            cluster_xml(
                name=cluster.name,
                node_name=node_name,
                key=cluster.key,
                node_type=node_type,
                port=cluster.port,
                nodes=everyone,
                extra=interval,
            )
        )

    master = cluster.master(conf_text=old("master", "master")).start().wait_ready()
    worker = cluster.worker("worker1", conf_text=old("worker1", "client")).start()
    worker.wait_joined()
    assert master.wait_listed(["master", "worker1"]) == rows("master", "worker1")

    for node, tag in ((master, "[Master] [Main]"), (worker, "[Worker worker1] [Main]")):
        node.wait_log(
            f"WARNING: {tag} <interval> in <cluster> of {node.conf} is no longer used and is ignored: remove it"
        )
        line = node.wait_log(f"WARNING: {tag} only the master node should be listed in <nodes> of {node.conf}")
        assert "but 3 are; using the first, 127.0.0.1" in line, line
    worker.wait_log("<node_type> client in <cluster>")
    assert "read as worker" in worker.wait_log("<node_type> client in <cluster>")


# More: start-up and liveness corners. ----------------------------------------


def test_port_in_use_stops_the_master_and_a_later_start_works(cluster: Cluster) -> None:
    """
    A master whose port is taken exits 1 at once, saying which address and
    why, before opening its control socket; once the port is free the same
    home starts cleanly over whatever the failed start left behind.
    """
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", cluster.port))
        blocker.listen(1)
        master = cluster.master()
        result, took = run_twistd(master.conf, master.home)
        assert result.returncode == 1, result.stdout + result.stderr
        assert took < 10
        said = result.stdout + result.stderr + master.log_text()
        assert f"cannot listen on 127.0.0.1:{cluster.port}: Address already in use" in said, said
        assert not master.control_socket.exists()
    finally:
        blocker.close()
    master.start().wait_ready()
    (worker,) = cluster.start_workers("worker1")
    assert master.wait_listed(["master", "worker1"]) == rows("master", "worker1")


def test_workers_rejoin_a_master_that_was_frozen(cluster: Cluster) -> None:
    """
    The master is frozen (SIGSTOP) for a few seconds: the workers' keep-alives
    go unanswered, they drop the connection and retry, and they are back as
    soon as the master runs again.
    """
    master = cluster.start_master()
    workers = cluster.start_workers("worker1", "worker2")
    master.wait_listed(["master", "worker1", "worker2"])
    marks = [w.mark() for w in workers]

    master.signal(signal.SIGSTOP)
    try:
        for worker, mark in zip(workers, marks):
            worker.wait_log("Keep-alive 2 of 2 not answered by the master", since=mark)
            worker.wait_log("The master stopped answering keep-alives; disconnecting.", since=mark)
            worker.wait_log("Lost connection to master. Reconnecting.", since=mark)
            result = worker.control("-l")
            assert result.returncode == 1
            assert "not connected to the master" in result.stderr
    finally:
        master.signal(signal.SIGCONT)
    thawed = time.monotonic()
    for worker, mark in zip(workers, marks):
        worker.wait_joined(since=mark, timeout=10)
    assert master.wait_listed(["master", "worker1", "worker2"]) == rows("master", "worker1", "worker2")
    assert time.monotonic() - thawed < 10


class WorkerNeverRetried(AssertionError):
    """The worker stayed on a connection that never answered."""


def test_worker_gives_up_a_connection_that_is_never_answered(cluster: Cluster) -> None:
    """
    Something accepts the worker's TCP connection and then says nothing (a
    master host that froze after accepting, a proxy with no backend).  The
    worker must give up that attempt (as the master does after
    handshake_timeout) and retry, so that it joins once the real master
    listens there.
    """
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", cluster.port))
    silent.listen(5)
    silent.settimeout(15)
    accepted: list[socket.socket] = []
    try:
        worker = cluster.worker("worker1").start()
        accepted.append(silent.accept()[0])
        silent.close()  # the port is free for the real master; the accepted connection stays, silent
        master = cluster.start_master()
        try:
            worker.wait_joined(timeout=HANDSHAKE_TIMEOUT + 10)
        except AssertionError as e:
            assert worker.running() and master.running()
            assert master.listed_names() == ["master"]
            raise WorkerNeverRetried(f"{e}; the worker's log:\n{worker.log_text()}") from None
        assert "the master did not complete the handshake within" in worker.log_text()
    finally:
        silent.close()
        for sock in accepted:
            sock.close()
