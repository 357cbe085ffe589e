"""
What the benchmarks share about processes: the figures /proc gives of a
process, a cluster node run by twistd in its own process and home (by
C{lab/nodes.py}, the harness of the tests and the lab), the reading of its
growing cluster.log, py-spy recordings, and the machine's description.

Every wait here is bounded in time; L{Node.stop} always ends the process
(SIGTERM, then SIGKILL) and its py-spy.
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from figures import Results, freePort  # bench/figures.py: first, it puts the checkout on sys.path
from lab.nodes import Node as LabNode  # the one process harness, shared with the tests and the lab

CLK_TCK = os.sysconf("SC_CLK_TCK")
CLUSTER = "benchcluster"
MASTER_NAME = "bench-master"

#: One-second cycles and keep-alives, with options every build knows (the
#: attack benches run the same nodes against older trees).
FAST_CYCLES = {
    "keep_alive": 1,
    "check_worker_lastkeepalive": 1,
    "max_allowed_time_without_keepalive": 10,
    "connection_retry": 1,
    "sync_integrity": 1,
    "recalculate_integrity": 1,
}


# ---------------------------------------------------------------------------
# /proc figures of a process.


def procStatusKB(pid: int, field: str) -> int | None:
    """A C{kB} field (VmRSS, VmHWM) of /proc/PID/status, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def procCPU(pid: int) -> float | None:
    """utime + stime of process C{pid} (all threads), in seconds, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def procUSS(pid: int) -> int | None:
    """
    The process's unique set size in kB (Private_Clean + Private_Dirty of
    /proc/PID/smaps_rollup: what ending it would free), or None if gone.
    """
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:", "Private_Hugetlb:")):
                    total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total


def procOpenFiles(pid: int) -> int | None:
    """Entries of /proc/PID/fd (files, sockets, pipes, inotify...), or None if gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.0f} MB"


def fmtBytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def dropTree(path: str) -> None:
    """Remove a tree and flush the deletions, so they do not weigh on what follows."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


# ---------------------------------------------------------------------------
# A node as a real twistd process: lab/nodes.py's, with what a bench measures.


class Node(LabNode):
    """
    A master or worker in its own home (the API off), run by twistd in its
    own process and session by the harness of the tests and the lab
    (L{lab.nodes.Node}); this adds the figures /proc gives of it, py-spy,
    and the names the benchmarks use.  Subclasses change L{command} to run
    twistd under a wrapper (with L{twistdArguments}).
    """

    #: Seconds L{waitListening} waits at the most.
    startTimeout = 60.0

    def __init__(
        self,
        home: str,
        name: str,
        nodeType: str,
        key: str,
        port: int,
        options: Mapping[str, float | int] | None = None,
        *,
        debug: bool = False,
        output: str = "node.out",
    ) -> None:
        super().__init__(
            None, Path(home), node_name=name, node_type=nodeType, key=key, cluster_name=CLUSTER, port=port,
            options={f"cluster.{option}": value for option, value in (options or {}).items()}, debug=debug,
        )
        self.name = name
        self.nodeType = nodeType
        self.config = str(self.conf)
        self.log = str(self.log_path)
        self.socketPath = str(self.control_socket)
        self.output = os.path.join(home, output)
        self.startedAt = 0.0
        self.startedWall = 0.0
        self.peakRSS = 0
        #: py-spy recording this node (all threads), if any.
        self.spy: subprocess.Popen | None = None
        self.spyOutput = os.path.join(home, "bench.spy.txt")

    def twistdArguments(self) -> list[str]:
        return self.twistd_arguments()

    def output_paths(self) -> tuple[Path, Path]:
        return Path(self.output), Path(self.output)

    def start(self) -> "Node":
        self.startedAt = time.perf_counter()
        self.startedWall = time.time()
        return super().start()

    def alive(self) -> bool:
        return self.running()

    def assertAlive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")

    def waitListening(self, timeout: float | None = None) -> None:
        """Until the node's control socket answers (it opens after the cluster port)."""
        self.wait_ready(self.startTimeout if timeout is None else timeout, interval=0.05)

    def cpu(self) -> float:
        """utime + stime so far, in seconds (0 once the process is gone)."""
        return (procCPU(self.pid) if self.alive() else None) or 0.0

    def rss(self) -> int | None:
        return procStatusKB(self.pid, "VmRSS") if self.alive() else None

    def hwm(self) -> int | None:
        return procStatusKB(self.pid, "VmHWM") if self.alive() else None

    def uss(self) -> int | None:
        return procUSS(self.pid) if self.alive() else None

    def openFiles(self) -> int | None:
        return procOpenFiles(self.pid) if self.alive() else None

    def sampleRSS(self) -> None:
        rss = self.rss()
        if rss:
            self.peakRSS = max(self.peakRSS, rss)

    def signal(self, signum: int) -> None:
        if self.alive():
            super().signal(signum)

    def startSpy(self, pyspy: str, output: str | None = None) -> None:
        """Sample every thread of the node with py-spy (100 Hz, idle included) until L{stopSpy}."""
        self.stopSpy()
        self.spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(self.pid), "--rate", "100", "--threads", "--idle",
             "--format", "raw", "--output", output or self.spyOutput, "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )

    def stopSpy(self) -> None:
        if self.spy is not None and self.spy.poll() is None:
            self.spy.send_signal(signal.SIGINT)
            try:
                self.spy.wait(30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait(5)
        self.spy = None

    def stop(self) -> None:  # type: ignore[override]
        """SIGTERM, then SIGKILL if it lingers (and its py-spy)."""
        self.stopSpy()
        if self.process is not None:
            try:
                super().stop()
            except AssertionError:
                pass  # it ignored SIGTERM and was killed: a bench goes on with its report

    def tail(self, lines: int = 15) -> str:
        """The end of its cluster.log, or of what it printed if the log is empty."""
        for path in (self.log, self.output):
            try:
                with open(path, errors="replace") as f:
                    text = "".join(f.readlines()[-lines:])
                if text:
                    return text
            except OSError:
                pass
        return ""


class NodeCluster:
    """
    A master and C{layout.workers} workers in the homes of C{layout} (a
    L{trees.AgentLayout}), each built by C{makeNode(home, name, type, key,
    port)}, with one key and a free port.
    """

    def __init__(self, layout: Any, makeNode: Callable[[str, str, str, str, int], Node]) -> None:
        self.layout = layout
        key, self.port = secrets.token_hex(16), freePort()
        self.master = makeNode(layout.masterHome, MASTER_NAME, "master", key, self.port)
        self.workers = [makeNode(home, name, "worker", key, self.port)
                        for home, name in zip(layout.workerHomes, layout.workerNames)]

    @property
    def nodes(self) -> list[Any]:
        return [self.master, *self.workers]

    def check(self) -> None:
        """Raise if a node exited."""
        for node in self.nodes:
            node.assertAlive()

    def stop(self) -> None:
        stopAll([*self.workers, self.master])


def exitOnTerminate() -> None:
    """
    Make SIGTERM (C{kill}, C{timeout}) raise SystemExit in the bench, so that
    its C{finally} blocks stop the nodes and remove the trees; the nodes run
    in sessions of their own and would outlive it otherwise.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def waitFor(condition: Callable[[], object], timeout: float) -> float | None:
    """Seconds until C{condition()} holds (polled every 0.1 s), or None after C{timeout}."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def stopAll(nodes: Iterable[Node]) -> None:
    """Stop every node, even when stopping one fails."""
    failure = None
    for node in nodes:
        try:
            node.stop()
        except BaseException as e:  # the others must still stop
            failure = failure or e
    if failure is not None:
        raise failure


def dumpTails(nodes: Iterable[Node], lines: int = 12) -> None:
    """After a failure: the end of each node's log (the trees are removed after)."""
    for node in nodes:
        print(f"\n-- last lines of {node.name} ({node.log}):\n{node.tail(lines)}", file=sys.stderr)


class LogWatcher:
    """
    Reads a growing cluster.log; keeps each line with when the bench read it
    (C{time.perf_counter()} less C{t0}).
    """

    def __init__(self, path: str, t0: float = 0.0) -> None:
        self.path = path
        self.t0 = t0
        self.offset = 0
        self.partial = ""
        self.lines: list[tuple[float, str]] = []

    def poll(self) -> list[str]:
        """Read what was added; the new whole lines."""
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except OSError:
            return []
        if not data:
            return []
        now = time.perf_counter() - self.t0
        parts = (self.partial + data).split("\n")
        self.partial = parts.pop()
        self.lines.extend((now, line) for line in parts)
        return parts

    def all(self, needle: str | re.Pattern) -> list[tuple[float, str]]:
        return self.since(float("-inf"), needle)

    def first(self, needle: str | re.Pattern) -> tuple[float, str] | None:
        found = self.all(needle)
        return found[0] if found else None

    def since(self, start: float, needle: str | re.Pattern) -> list[tuple[float, str]]:
        """The lines read at or after C{start} that hold C{needle} (a string or a pattern)."""
        return [
            (at, line) for at, line in self.lines
            if at >= start and (needle.search(line) if isinstance(needle, re.Pattern) else needle in line)
        ]


# ---------------------------------------------------------------------------
# py-spy.


#: Leaf frames of a thread that waits (not counted as busy).
SPY_IDLE = ("Condition.wait", "EPollReactor.doPoll", "select.epoll.poll")

#: The same, with the thread pool's idle workers.
SPY_IDLE_POOL = (*SPY_IDLE, "_worker (concurrent", "lock.acquire")


def findPySpy() -> str | None:
    """py-spy beside this Python, or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.access(beside, os.X_OK) else shutil.which("py-spy")


def printSpy(path: str, title: str, top: int = 22, idle: tuple[str, ...] = SPY_IDLE,
             functions: bool = False) -> None:
    """
    Where the samples of a py-spy raw recording went: by thread, the busiest
    leaf lines, and (C{functions}) the daemon's functions on the stack.
    """
    if not os.path.exists(path):
        print(f"\n(no py-spy recording at {path})")
        return
    leaves: dict[str, int] = {}
    daemon: dict[str, int] = {}
    threads: dict[str, list[int]] = {}
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            frames = stack.split(";")
            n = int(count)
            thread = re.sub(r"^thread \(\d+\):? ?", "", frames[0]) or "?"
            thread = "main" if "MainThread" in thread else ("pool" if "PoolThread" in thread else thread)
            busy = not any(word in frames[-1] for word in idle)
            counts = threads.setdefault(thread, [0, 0])
            counts[0] += n
            counts[1] += n if busy else 0
            if busy:
                leaf = f"{thread:4} {frames[-1]}"
                leaves[leaf] = leaves.get(leaf, 0) + n
                for frame in set(frames[1:]):
                    if "wazuhcluster" in frame:
                        daemon[frame] = daemon.get(frame, 0) + n
    print(f"\n== {title} (100 samples/s of every thread)")
    for thread, (total, busy) in sorted(threads.items()):
        print(f"  {thread}: {total / 100:.1f} s sampled, {busy / 100:.1f} s busy")
    print("  busiest lines (seconds):")
    for leaf, n in sorted(leaves.items(), key=lambda x: -x[1])[:top]:
        print(f"  {n / 100:7.2f}  {leaf}")
    if functions:
        print("  daemon functions on the stack when busy (seconds, inclusive):")
        for frame, n in sorted(daemon.items(), key=lambda x: -x[1])[:top]:
            print(f"  {n / 100:7.2f}  {frame}")


# ---------------------------------------------------------------------------
# The machine.


def machine(results: Results, top: str, tools: Iterable[str] = ()) -> None:
    """The "Machine" section: Python, cores, memory, platform, Twisted, where the trees go, the load."""
    results.section("Machine")
    import twisted

    results.add("python", f"{platform.python_implementation()} {platform.python_version()}")
    results.add("nproc", str(os.cpu_count()))
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1])
    results.add("memory", f"{total / 2**20:.1f} GiB")
    results.add("platform", platform.platform())
    results.add("twisted", twisted.__version__)
    fs = subprocess.run(["df", "-T", top], capture_output=True, text=True).stdout.splitlines()[-1].split()
    results.add("temporary trees", f"{top} ({fs[1]} on {fs[0]})")
    for tool in tools:
        first = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()
        results.add(tool, first[0] if first else "?")
    load = os.getloadavg()
    results.add("load average at start", " / ".join(f"{v:.2f}" for v in load))
    if load[0] > 1.0:
        results.notes.append(f"the machine was busy at start (load {load[0]:.2f}): wall times suffer first")
