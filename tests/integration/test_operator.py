"""
What an operator sees when starting and stopping a node, with real twistd
processes: stale pid files, a requested stop, a taken port, a bind address
of another host, a manager without a cluster, debug logging on a worker,
and messages without Python reprs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_config import REALISTIC

from .nodes import (
    TWISTD_RUN,
    Cluster,
    Node,
    cluster_xml,
    free_port,
    new_key,
    ossec_conf,
    port_is_bindable,
    run_twistd,
    wait_for,
)

#: What no message may hold: a bytes repr, an object repr, a doubled period.
REPRS = re.compile(r"b'|b\"|[A-Za-z]+Address\(|[A-Za-z]+Error\(|<[a-z_.]+ object at 0x|\w\.\.(?!\.)")


def assert_no_reprs(text: str) -> None:
    found = [line for line in text.splitlines() if REPRS.search(line)]
    assert not found, "\n".join(found)


def _home(tmp_path: Path, text: str) -> tuple[Path, Path]:
    home = tmp_path / "h"
    (home / "etc").mkdir(parents=True)
    conf = home / "etc" / "ossec.conf"
    conf.write_text(text)
    return home, conf


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


# Starting. -------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["another-program", "pid-1"])
def test_stale_pid_file_is_said_and_the_node_starts(cluster: Cluster, owner: str) -> None:
    """
    The pid file names a pid that is no longer a node: a program of this
    user that got the pid since, or pid 1 (a container's first process,
    another user's without root).  The node says so in one line, replaces
    the file and starts; the other program is left alone.
    """
    master = cluster.master()
    master.pid_file.parent.mkdir(parents=True, exist_ok=True)
    other = None
    if owner == "another-program":
        other = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
        pid = other.pid
    else:
        pid = 1
    try:
        master.pid_file.write_text(f"{pid}\n")
        master.start().wait_ready()
        assert master.pid_file.read_text().strip() == str(master.pid)
        lines = master.stderr_text().splitlines()
        assert lines == [
            f"wazuh-clusterd: INFO: Removed the stale pid file {master.pid_file}: no node runs with that pid any more."
        ], lines
        if other is not None:
            assert other.poll() is None
    finally:
        if other is not None:
            other.kill()
            other.wait()


# Stopping. -------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_requested_stop_exits_zero_and_says_it_stopped(cluster: Cluster, signum: int) -> None:
    """
    SIGTERM (systemctl stop, kill), SIGINT (Ctrl-C) or SIGHUP (the terminal
    closed) ends a node with status 0, a last "stopped" line, and no pid file left.
    """
    master = cluster.start_master()
    (worker,) = cluster.start_workers("worker1")
    name = signal.Signals(signum).name
    for node, tag, kind in ((worker, "[Worker worker1] [Main]", "worker"), (master, "[Master] [Main]", "master")):
        node.signal(signum)
        assert node.wait_exit(15) == 0, node.stderr_text()
        log = node.log_text().splitlines()
        assert f"INFO: {tag} Stopping {kind} node {node.node_name} ({name})." in "\n".join(log[-4:]), log[-4:]
        assert log[-1].endswith(f"INFO: {tag} {kind.capitalize()} node {node.node_name} stopped."), log[-1]
        assert not node.pid_file.exists()
        assert node.stderr_text() == ""
        assert_no_reprs(node.log_text())


# A taken port. ---------------------------------------------------------------


def _hold(port: int) -> socket.socket:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    return holder


def _end_daemon(node: Node) -> None:
    """If a daemonized node did start after all, end it (it is in no Cluster's care)."""
    try:
        pid = int(node.pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("which", ["cluster", "api"])
@pytest.mark.parametrize("mode", ["foreground", "daemon"])
def test_port_in_use_is_one_line_on_stderr(cluster: Cluster, mode: str, which: str) -> None:
    """
    The master's cluster port, or its API's port, is taken: in the
    foreground and as a daemon, one line on standard error (no repr, no
    traceback), nothing on standard output, status 1; the same line in
    cluster.log.
    """
    master = cluster.master()
    port = master.port
    if which == "api":
        port = free_port()
        settings = master.home / "api" / "configuration" / "api.yaml"
        settings.write_text(f"enabled: yes\nhost: 127.0.0.1\nport: {port}\n")
    holder = _hold(port)
    try:
        command = TWISTD_RUN + (["-n"] if mode == "foreground" else []) + ["wazuhcluster", "--config", str(master.conf)]
        result = subprocess.run(command, cwd=master.home, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
    finally:
        holder.close()
        if mode == "daemon":
            _end_daemon(master)
    line = f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr == f"wazuh-clusterd: CRITICAL: {line}\n", result.stderr
    log = master.log_text()
    assert log.count(line) == 1 and "Traceback" not in log, log
    assert_no_reprs(log)
    assert not master.control_socket.exists()


# Configuration. --------------------------------------------------------------


def test_bind_addr_of_another_host_is_a_configuration_error(tmp_path: Path) -> None:
    """
    A master whose <bind_addr> is no address of this machine stops at once
    with one line naming the file, the line and the element.
    """
    port = free_port()
    text = ossec_conf(cluster_xml(name="wazuh", node_name="master", key=new_key(), node_type="master",
                                  port=port, nodes=["127.0.0.1"], bind_addr="192.0.2.1"))
    home, conf = _home(tmp_path, text)
    result, took = run_twistd(conf, home)
    assert result.returncode == 1
    assert took < 10
    assert result.stdout == ""
    assert result.stderr == (
        f"wazuh-clusterd: CRITICAL: {conf}:{_line_of(text, '<bind_addr>')}: <bind_addr> is '192.0.2.1', which is"
        " not an address of this machine (Cannot assign requested address); put one of its IP addresses,"
        " or 0.0.0.0 for all of them\n"
    ), result.stderr
    assert not (home / "logs").exists() and not (home / "queue").exists()


#: A stand-alone manager's ossec.conf as Wazuh installs it: no <cluster> section.
STOCK_OSSEC_CONF = re.sub(r"\n *<cluster>.*?</cluster>", "", REALISTIC, flags=re.S)


def test_manager_without_a_cluster_section_exits_zero(tmp_path: Path) -> None:
    """
    A stock ossec.conf with no <cluster>: one line saying the cluster is not
    configured in that file and how to enable it, status 0 (as Wazuh's own
    daemon with the cluster disabled), nothing written.
    """
    home, conf = _home(tmp_path, STOCK_OSSEC_CONF)
    result, took = run_twistd(conf, home)
    assert result.returncode == 0, result.stderr
    assert took < 10
    assert result.stdout == ""
    assert result.stderr == (
        f"wazuh-clusterd: INFO: The cluster is not configured in {conf} (it has no <cluster> section):"
        " add one with <disabled>no</disabled> to run this node in a cluster.\n"
    )
    assert sorted(p.name for p in home.iterdir()) == ["etc"]


def test_cluster_section_outside_ossec_config_is_an_error(tmp_path: Path) -> None:
    """A <cluster> written outside every <ossec_config> block was meant to be read: status 1, and where it is."""
    section = cluster_xml(name="wazuh", node_name="master", key=new_key(), node_type="master",
                          port=free_port(), nodes=["127.0.0.1"])
    home, conf = _home(tmp_path, STOCK_OSSEC_CONF + section)
    result, _ = run_twistd(conf, home)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wazuh-clusterd: CRITICAL: "), lines
    assert "outside <ossec_config>" in lines[0], lines


# Debug logging and messages. -------------------------------------------------


def test_debug_logging_on_a_worker(cluster: Cluster) -> None:
    """
    --debug on a worker shows its keep-alives and unchanged agent statuses
    at DEBUG level; without it, no DEBUG line.
    """
    options = {"cluster.keep_alive": 0.5, "cluster.sync_agent_info": 0.5, "cluster.connection_retry": 0.5}
    cluster.start_master(options=options)
    debugged, plain = cluster.worker("worker1", options=options, debug=True), cluster.worker("worker2", options=options)
    for worker in (debugged, plain):
        worker.start().wait_joined()
    debugged.wait_log(re.compile(r"DEBUG: \[Worker worker1\] \[Main\] Keep-alive answered by the master in \d+ ms\."),
                      count=2)
    debugged.wait_log("DEBUG: [Worker worker1] [Agent-info] No agent status changed since the last cycle")
    # The plain worker has run as long, with the same cycles.
    assert "DEBUG" not in plain.log_text()
    assert "DEBUG" in debugged.stdout_text()


def test_connection_failures_read_as_words(cluster: Cluster) -> None:
    """
    A worker whose master refuses or whose master's name does not resolve
    says why in words: no HostnameAddress(...), no b'...', no "..".
    """
    refused = cluster.worker("worker1", debug=True).start()
    unknown = cluster.worker("worker2", master_address="nosuch.invalid", debug=True).start()
    refused.wait_log(f"Could not connect to master 127.0.0.1:{cluster.port}: connection refused. Retrying.")
    unknown.wait_log(
        f"Could not connect to master nosuch.invalid:{cluster.port}: the name does not resolve (DNS lookup failed)."
        " Retrying.",
        timeout=30,
    )
    for worker in (refused, unknown):
        worker.wait_log("DEBUG", count=2)
        assert_no_reprs(worker.log_text())
