"""
The harness that runs real cluster nodes as processes: for the end-to-end
tests, the cluster lab and the benchmarks (C{bench/processes.py} adds what
the benchmarks measure of a process to L{Node}).

Each node gets its own Wazuh home (``etc/ossec.conf``,
``etc/local_internal_options.conf``) under pytest's C{tmp_path}, is started
as ``twistd -n wazuhcluster --config HOME/etc/ossec.conf`` (optionally
inside a network namespace with ``ip netns exec``) and is questioned with
``python -m wazuhcluster.control --home HOME``, exactly as an operator
would.  Nothing here needs a reactor: every wait is a bounded poll.

L{Cluster} owns every process it starts; L{Cluster.cleanup} (called by the
C{cluster} fixture's finalizer) ends them all, whatever happened.
"""

from __future__ import annotations

import errno
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

#: twistd in this Python, without relying on a C{twistd} script on PATH.
TWISTD_RUN = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: The command that runs a node in the foreground (the config file is added after it).
TWISTD = [*TWISTD_RUN, "-n", "wazuhcluster"]

#: The command that asks a node about its cluster (``--home HOME`` and the action follow).
CONTROL = [sys.executable, "-m", "wazuhcluster.control"]

#: Fast cycle timings, so that a test sees keep-alives, drops and retries in seconds.
FAST_OPTIONS: dict[str, float | int] = {
    "cluster.keep_alive": 0.5,
    "cluster.check_worker_lastkeepalive": 0.5,
    "cluster.max_allowed_time_without_keepalive": 2,
    "cluster.connection_retry": 0.5,
    "cluster.handshake_timeout": 2,
}

#: Longest path the kernel takes for a UNIX socket (sun_path holds 108 bytes with the NUL).
MAX_UNIX_PATH = 107

#: How long a single wait may take before the test fails.
DEFAULT_TIMEOUT = 15.0


def new_key() -> str:
    """A cluster key as Wazuh wants it: 32 letters and digits."""
    return secrets.token_hex(16)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind port 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """
    Whether C{port} could be listened on now.  With C{SO_REUSEADDR}, Linux
    refuses the bind only if some socket is listening there (connections in
    TIME_WAIT do not count).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def wait_for(
    condition: Callable[[], T],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
    alive: Iterable["Node"] = (),
) -> T:
    """
    Poll C{condition} every C{interval} seconds until it returns something
    true, and return that; fail the test after C{timeout} seconds, or as soon
    as one of the C{alive} nodes has exited.
    """
    deadline = time.monotonic() + timeout
    watched = list(alive)
    while True:
        result = condition()
        if result:
            return result
        for node in watched:
            node.assert_running()
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def never(
    condition: Callable[[], object], what: str, duration: float, interval: float = 0.2
) -> None:
    """Check for C{duration} seconds that C{condition} stays false."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert not condition(), f"{what} happened, and should not have"
        time.sleep(interval)


def cluster_xml(
    *,
    name: str,
    node_name: str,
    key: str,
    node_type: str,
    port: int | str,
    nodes: Sequence[str],
    bind_addr: str = "127.0.0.1",
    hidden: str = "no",
    disabled: str = "no",
    extra: str = "",
) -> str:
    """The ``<cluster>`` section of an ``ossec.conf``."""
    node_lines = "".join(f"      <node>{n}</node>\n" for n in nodes)
    return (
        "  <cluster>\n"
        f"    <name>{name}</name>\n"
        f"    <node_name>{node_name}</node_name>\n"
        f"    <key>{key}</key>\n"
        f"    <node_type>{node_type}</node_type>\n"
        f"    <port>{port}</port>\n"
        f"    <bind_addr>{bind_addr}</bind_addr>\n"
        "    <nodes>\n"
        f"{node_lines}"
        "    </nodes>\n"
        f"    <hidden>{hidden}</hidden>\n"
        f"    <disabled>{disabled}</disabled>\n"
        f"{extra}"
        "  </cluster>\n"
    )


def ossec_conf(cluster_section: str) -> str:
    """A whole ``ossec.conf`` around a ``<cluster>`` section (or other text)."""
    return (
        "<ossec_config>\n"
        "  <global>\n"
        "    <jsonout_output>yes</jsonout_output>\n"
        "  </global>\n"
        "</ossec_config>\n"
        "\n"
        "<ossec_config>\n"
        f"{cluster_section}"
        "</ossec_config>\n"
    )


def internal_options_text(options: dict[str, float | int]) -> str:
    return "".join(f"{name}={value}\n" for name, value in options.items())


@dataclass(frozen=True)
class Row:
    """One line of ``cluster_control -l``."""

    name: str
    address: str
    type: str
    version: str


def parse_table(text: str) -> list[Row]:
    """
    The rows of the table ``cluster_control -l`` prints: a dashed rule, the
    header, a rule, the rows, a rule.
    """
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    assert len(rules) >= 3, f"no table in the output of cluster_control -l:\n{text}"
    header = lines[rules[0] + 1].split()
    assert header == ["Name", "Address", "Type", "Version"], f"unexpected header: {header}"
    rows = []
    for line in lines[rules[1] + 1 : rules[2]]:
        cells = line.split()
        assert len(cells) == 4, f"unexpected row in cluster_control -l: {line!r}"
        rows.append(Row(*cells))
    return rows


@dataclass(frozen=True)
class Health:
    """One node of ``cluster_control -i more``."""

    name: str
    address: str
    fields: dict[str, str]


_HEALTH_NODE = re.compile(r"^    (\S+) \((.*)\)$")
_HEALTH_FIELD = re.compile(r"^        ([^:]+): (.*)$")


def parse_health_more(text: str) -> tuple[str, int, list[Health]]:
    """Cluster name, the connected count, and the nodes of ``cluster_control -i more``."""
    name = re.search(r"^Cluster name: (.*)$", text, re.M)
    count = re.search(r"^Connected nodes \((\d+)\):$", text, re.M)
    assert name and count, f"unexpected output of cluster_control -i more:\n{text}"
    nodes: list[Health] = []
    for line in text.splitlines():
        node = _HEALTH_NODE.match(line)
        if node:
            nodes.append(Health(node.group(1), node.group(2), {}))
            continue
        field = _HEALTH_FIELD.match(line)
        if field and nodes:
            nodes[-1].fields[field.group(1)] = field.group(2)
    return name.group(1), int(count.group(1)), nodes


def wazuh_time(text: str) -> float:
    """Seconds since the epoch of a date as cluster_control prints it."""
    return time.mktime(time.strptime(text, "%Y/%m/%d %H:%M:%S"))


def spawn(command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a node's process in a session of its own, with nothing on its stdin."""
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)


class Node:
    """
    One node: its home, its configuration, and its process once started.
    Without a L{Cluster} (benchmarks), the node owns its process alone:
    L{stop} it.
    """

    def __init__(
        self,
        cluster: "Cluster | None",
        home: Path,
        *,
        node_name: str,
        node_type: str,
        key: str,
        cluster_name: str,
        port: int,
        master_address: str = "127.0.0.1",
        bind_addr: str = "127.0.0.1",
        options: dict[str, float | int] | None = None,
        netns: str | None = None,
        conf_text: str | None = None,
        debug: bool = False,
    ) -> None:
        self.cluster = cluster
        self.home = home
        self.node_name = node_name
        self.node_type = node_type
        self.key = key
        self.cluster_name = cluster_name
        self.port = port
        self.master_address = master_address
        self.bind_addr = bind_addr
        self.options = dict(FAST_OPTIONS if options is None else options)
        self.netns = netns
        self.debug = debug
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.write_config(conf_text)
        self.write_api_settings()
        assert len(str(self.control_socket)) <= MAX_UNIX_PATH, (
            f"the control socket path {self.control_socket} is longer than a UNIX socket"
            " path may be: run pytest with a shorter --basetemp"
        )

    def __repr__(self) -> str:
        return f"<Node {self.node_name} ({self.node_type}) at {self.home}>"

    # Files.

    @property
    def conf(self) -> Path:
        return self.home / "etc" / "ossec.conf"

    @property
    def internal_options(self) -> Path:
        return self.home / "etc" / "local_internal_options.conf"

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "cluster.log"

    @property
    def control_socket(self) -> Path:
        return self.home / "queue" / "cluster" / "c-internal.sock"

    @property
    def node_key(self) -> Path:
        return self.home / "etc" / "cluster-node.key"

    @property
    def node_cert(self) -> Path:
        return self.home / "etc" / "cluster-node.crt"

    @property
    def pid_file(self) -> Path:
        return self.home / "var" / "run" / "wazuh-clusterd.pid"

    def conf_section(self) -> str:
        return cluster_xml(
            name=self.cluster_name,
            node_name=self.node_name,
            key=self.key,
            node_type=self.node_type,
            port=self.port,
            nodes=[self.master_address],
            bind_addr=self.bind_addr,
        )

    def write_config(self, conf_text: str | None = None) -> None:
        (self.home / "etc").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(conf_text if conf_text is not None else ossec_conf(self.conf_section()))
        self.internal_options.write_text(internal_options_text(self.options))

    def write_api_settings(self) -> None:
        """
        Turn the node's API off unless a test wrote its own api.yaml: the
        default port, 55000, may be another program's on this machine.
        """
        settings = self.home / "api" / "configuration" / "api.yaml"
        if not settings.exists():
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text("enabled: no\n")

    # The process.

    def twistd_arguments(self) -> list[str]:
        """What follows twistd on the command line: the node in the foreground."""
        return ["-n", "wazuhcluster", "--config", str(self.conf), *(["--debug"] if self.debug else [])]

    def command(self) -> list[str]:
        """The node's command line; subclasses may run twistd under a wrapper."""
        command = TWISTD_RUN + self.twistd_arguments()
        if self.netns is not None:
            command = ["ip", "netns", "exec", self.netns] + command
        return command

    def output_paths(self) -> tuple[Path, Path]:
        """Where the process's stdout and stderr go (one file for both if equal)."""
        return self.home / f"stdout.{self.starts}", self.home / f"stderr.{self.starts}"

    def start(self) -> "Node":
        """Start the node's process (its output goes to L{output_paths}: HOME/stdout.N and HOME/stderr.N)."""
        assert not self.running(), f"{self} is already running"
        self.starts += 1
        out_path, err_path = self.output_paths()
        out = open(out_path, "wb")
        err = out if err_path == out_path else open(err_path, "wb")
        try:
            start = spawn if self.cluster is None else self.cluster.spawn
            self.process = start(self.command(), cwd=self.home, stdout=out, stderr=err)
        finally:
            out.close()
            err.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stdout_text(self) -> str:
        path = self.output_paths()[0]
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr_text(self) -> str:
        path = self.output_paths()[1]
        return path.read_text(errors="replace") if path.exists() else ""

    def assert_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"{self} exited with status {self.process.returncode}:\n{self.stderr_text()}"
                f"\n--- log ---\n{self.log_text()[-3000:]}"
            )

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the node and reap it."""
        assert self.running(), f"{self} is not running"
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM the node, SIGKILL it if it does not end in time; its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"{self} ignored SIGTERM for {timeout} s")
        return self.process.returncode

    def wait_exit(self, timeout: float = 10) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    # The log.

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Where the log ends now: pass it as C{since} to look only at what follows."""
        return len(self.log_text())

    def log_since(self, since: int = 0) -> str:
        return self.log_text()[since:]

    def log_count(self, text: str, since: int = 0) -> int:
        return self.log_since(since).count(text)

    def wait_log(
        self, text: str | re.Pattern[str], since: int = 0, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        """Wait until the log (after C{since}) has C{text} C{count} times; return the first line with it."""

        def found() -> str | None:
            log = self.log_since(since)
            if isinstance(text, re.Pattern):
                hits = [m.group(0) for m in text.finditer(log)]
            else:
                hits = [line for line in log.splitlines() if text in line]
            return hits[0] if len(hits) >= count else None

        return wait_for(found, f"{text!r} x{count} in the log of {self}", timeout, alive=[self])

    def log_lines(self, text: str, since: int = 0) -> list[str]:
        return [line for line in self.log_since(since).splitlines() if text in line]

    # Readiness.

    def control_socket_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.control_socket))
            except OSError:
                return False
            return True

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.1) -> "Node":
        """Wait until the node's control socket accepts connections (it opens last)."""
        wait_for(
            self.control_socket_answers, f"{self} to open its control socket", timeout, interval, alive=[self]
        )
        return self

    def wait_joined(self, since: int = 0, timeout: float = DEFAULT_TIMEOUT) -> "Node":
        """Wait until this worker says it joined its master (after C{since})."""
        self.wait_log("Successfully connected to master", since=since, timeout=timeout)
        return self

    # cluster_control.

    def control(self, *arguments: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``cluster_control --home HOME ARGUMENTS`` (from the root namespace)."""
        return run_control(self.home, *arguments, timeout=timeout)

    def list_nodes(self) -> list[Row]:
        """The rows of ``cluster_control -l`` asked of this node; fails unless it exits 0."""
        result = self.control("-l")
        assert result.returncode == 0, (
            f"cluster_control -l on {self} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
        return parse_table(result.stdout)

    def try_list_nodes(self) -> list[Row] | None:
        result = self.control("-l")
        if result.returncode != 0:
            return None
        return parse_table(result.stdout)

    def listed_names(self) -> list[str] | None:
        rows = self.try_list_nodes()
        return None if rows is None else [row.name for row in rows]

    def wait_listed(self, names: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> list[Row]:
        """Wait until ``-l`` on this node lists exactly C{names}, in that order."""
        wanted = list(names)
        last: list[list[str] | None] = [None]

        def listed() -> list[Row] | None:
            rows = self.try_list_nodes()
            last[0] = None if rows is None else [row.name for row in rows]
            return rows if last[0] == wanted else None

        try:
            return wait_for(listed, f"{self} to list {wanted}", timeout, interval=0.2, alive=[self])
        except AssertionError as e:
            raise AssertionError(f"{e}; last listed: {last[0]}") from None


def run_control(home: Path | str, *arguments: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CONTROL + ["--home", str(home), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_twistd(conf: Path, cwd: Path, timeout: float = 20) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a node that is expected to exit by itself; its result and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        TWISTD + ["--config", str(conf)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - started


class Cluster:
    """
    Builds the homes of one cluster's nodes under C{base} and owns every
    process started for them.
    """

    def __init__(self, base: Path, name: str = "wazuh", key: str | None = None, port: int | None = None) -> None:
        self.base = base
        self.name = name
        self.key = key or new_key()
        self.port = port or free_port()
        self.nodes: list[Node] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        process = spawn(command, **kwargs)
        self.processes.append(process)
        return process

    def node(self, home: str, node_name: str, node_type: str, **kwargs: object) -> Node:
        kwargs.setdefault("key", self.key)
        kwargs.setdefault("cluster_name", self.name)
        kwargs.setdefault("port", self.port)
        node = Node(self, self.base / home, node_name=node_name, node_type=node_type, **kwargs)
        self.nodes.append(node)
        return node

    def master(self, node_name: str = "master", home: str = "m", **kwargs: object) -> Node:
        return self.node(home, node_name, "master", **kwargs)

    def worker(self, node_name: str, home: str | None = None, **kwargs: object) -> Node:
        return self.node(home or node_name, node_name, "worker", **kwargs)

    def start_master(self, **kwargs: object) -> Node:
        return self.master(**kwargs).start().wait_ready()

    def start_workers(self, *names: str, **kwargs: object) -> list[Node]:
        """Start workers together, and wait until each has joined."""
        workers = [self.worker(name, **kwargs).start() for name in names]
        for worker in workers:
            worker.wait_joined()
        return workers

    def cleanup(self) -> None:
        """End every process started here: SIGTERM, then SIGKILL what is left."""
        # Workers first (they were started after their master), so that their
        # logs do not end with a lost master.
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGCONT)  # in case a test left it stopped
                    process.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def report(self) -> str:
        """Every node's log and stderr, to show when a test failed."""
        parts = []
        for node in self.nodes:
            status = "never started"
            if node.process is not None:
                status = f"exit status {node.process.poll()}"
            parts.append(f"===== {node} ({status}) =====\n{node.log_text()}")
            err = node.stderr_text()
            if err.strip():
                parts.append(f"----- stderr -----\n{err}")
        return "\n".join(parts)


# A hostile master, for the integrity tests. ---------------------------------

#: A master started from the project's own code (L{wazuhcluster.node.loadNode}
#: and L{wazuhcluster.node.makeNodeService} on Twisted's reactor, logging to
#: HOME/logs/cluster.log as twistd would), except that every bundle it sends
#: a worker carries extra records chosen by the test.  Arguments: the master's
#: ossec.conf, then a JSON object with "files" ([relative path to announce,
#: absolute path to read] pairs) and "deletions" (relative paths).
HOSTILE_MASTER_SCRIPT = r'''
import json
import sys

from twisted.internet import reactor
from twisted.logger import Logger, globalLogBeginner

import wazuhcluster.master.bundlecache as bundlecache
from wazuhcluster.logs import clusterLogObserver, openLogFile
from wazuhcluster.node import loadNode, makeNodeService

configPath, spec = sys.argv[1], json.loads(sys.argv[2])
log = Logger(namespace="hostile")
HonestBundleWriter = bundlecache.BundleWriter


class HostileBundleWriter(HonestBundleWriter):
    """Sends what the honest writer would, plus the test's records."""

    def __init__(self, files, deletions, *args, **kwargs):
        files = list(files) + [tuple(record) for record in spec["files"]]
        deletions = list(deletions) + list(spec["deletions"])
        log.warn("HOSTILE bundle: {n} files, {d} deletions", n=len(files), d=len(deletions))
        super().__init__(files, deletions, *args, **kwargs)


bundlecache.BundleWriter = HostileBundleWriter
setup = loadNode(configPath)
setup.home.makeFolders()
observer = clusterLogObserver(openLogFile(setup.home.clusterLog), setup.options.debug > 0, sys.stdout)
globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
service = makeNodeService(setup, reactor)
service.privilegedStartService()
service.startService()
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
reactor.run()
'''


class HostileMaster(Node):
    """A master run by L{HOSTILE_MASTER_SCRIPT} instead of twistd (no pid file)."""

    def __init__(self, cluster: "Cluster", home: Path, spec: dict[str, object], **kwargs: object) -> None:
        self.spec = spec
        super().__init__(cluster, home, **kwargs)

    def command(self) -> list[str]:
        import json

        return [sys.executable, "-c", HOSTILE_MASTER_SCRIPT, str(self.conf), json.dumps(self.spec)]


def hostile_master(
    cluster: Cluster,
    files: Sequence[tuple[str, str]],
    deletions: Sequence[str],
    node_name: str = "master",
    home: str = "m",
    **kwargs: object,
) -> HostileMaster:
    """
    A master of C{cluster} (not started) whose bundles also carry C{files}
    ((path announced, file read on the master)) and C{deletions}.
    """
    kwargs.setdefault("key", cluster.key)
    kwargs.setdefault("cluster_name", cluster.name)
    kwargs.setdefault("port", cluster.port)
    node = HostileMaster(
        cluster,
        cluster.base / home,
        {"files": [list(f) for f in files], "deletions": list(deletions)},
        node_name=node_name,
        node_type="master",
        **kwargs,
    )
    cluster.nodes.append(node)
    return node
