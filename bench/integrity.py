#!/usr/bin/env python
"""
Integrity benchmark of the cluster daemon: hashing, reactor stalls, full
syncs, propagation of a change.

    python bench/integrity.py [--files 10000] [--agents 50000] [--workers 10]
                              [--changes 20] [--big [--big-mb 500]] [--profile]

What it measures (see bench/README.md), each against a baseline run in the
same command:

 1. Hashing: L{IntegrityScanner.scan} of C{--files} files of 1-16 KiB of
    random content (half under C{etc/rules/}, half under
    C{queue/agent-groups/}) with a fresh scanner (cold: every file hashed)
    against C{md5sum} over the same files (one C{xargs -0 md5sum}), both with
    the page cache warm; then a re-scan with nothing changed (warm) against
    the cold scan.
 2. Reactor stalls: a real L{MasterIntegrity} over the same files, in a
    child process with its own reactor, runs a cold round then warm rounds
    (the scan in a thread, as in the daemon) while a 5 ms L{LoopingCall}
    records how late each tick fires; baseline: the same loop, no scan.
 3. Full sync to a fresh worker: the Wazuh ruleset, a C{--agents}-line
    C{etc/client.keys} and C{--agents} files under C{queue/agent-groups/},
    with a real master and a real worker as separate C{twistd} processes on
    127.0.0.1 (sync_integrity=1, recalculate_integrity=1): seconds from the
    worker's start until its cluster.log says the files are written (then
    the whole tree is checked: paths, MD5s, modes, mtimes), compressed bytes
    sent, peak RSS (VmHWM) of both, their CPU, the master's longest reactor
    stall; against C{cp -a} of the same tree (and C{cp -a} + C{sync}).
 4. Propagation: C{--workers} worker processes hold the ruleset and
    C{--prop-agents} agents' files (50,000 by default), at Wazuh's periods
    (C{--prop-periods fast}: 1 s); C{--changes} times, one rule is
    atomically rewritten on the master and the bench polls every worker's
    copy until all have the new MD5 (p50, p99, worst; a change that does
    not reach every worker within 20 s fails the run); it also checks that
    nothing else was rewritten.
 5. C{--big}: a C{--big-mb} MB CDB list of random C{key:value} lines synced to
    a fresh worker: seconds, bytes, peak RSS of both (the issue's target:
    each under 150 MB), against C{cp -a}.

Every loop is bounded in count and in time; every process started is
stopped and the temporary trees removed, whatever happens.  Nothing here
changes the daemon.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from figures import Results, freePort, percentile  # bench/figures.py
from processes import (  # bench/processes.py
    MASTER_NAME, LogWatcher, Node, dropTree, dumpTails, exitOnTerminate, findPySpy, fmtBytes, machine, mb,
    printSpy, stopAll,
)
from trees import rulesetProblem, writeRuleset  # bench/trees.py
from wazuhcluster.sync.table import SyncTable

#: The cycles the brief asks for, and nothing dropped for silence.
FAST_OPTIONS = {
    "sync_integrity": 1,
    "recalculate_integrity": 1,
    "connection_retry": 1,
    "check_worker_lastkeepalive": 600,
    "max_allowed_time_without_keepalive": 1200,
    "handshake_timeout": 60,
}

#: Wazuh's periods (what a cluster runs with unless told otherwise).
DEFAULT_PERIODS = {**FAST_OPTIONS, "sync_integrity": 9, "recalculate_integrity": 8}

#: Hard bounds, whatever the arguments say.
FIRST_SCAN_TIMEOUT = 120.0
FULL_SYNC_TIMEOUT = 300.0
FAN_OUT_TIMEOUT = 90.0
CHANGE_TIMEOUT = 20.0
BIG_SYNC_TIMEOUT = 600.0
STALL_CHILD_TIMEOUT = 180.0
COMMAND_TIMEOUT = 300.0

LAG_INTERVAL = 0.005


# ---------------------------------------------------------------------------
# Small helpers.


def run(command: list[str], timeout: float = COMMAND_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, timeout=timeout, check=True, **kwargs)


def timed(body: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = body()
    return time.perf_counter() - started, value


# ---------------------------------------------------------------------------
# Reactor lateness, measured with a LoopingCall.


class LagMonitor:
    """
    A C{LoopingCall} every C{interval} seconds that records, for each tick,
    how late it ran against the time the loop had scheduled it for.  A
    stall of the reactor of S seconds shows as one tick about S late (the
    loop skips the ticks it missed; they are not counted as late twice).
    """

    def __init__(self, clock: Any, interval: float = LAG_INTERVAL, limit: int = 400_000) -> None:
        self.clock = clock
        self.interval = interval
        self.limit = limit
        self.late: list[float] = []
        self.expected: float | None = None
        self.loop: Any = None

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        self.loop = LoopingCall(self._tick)
        self.loop.clock = self.clock
        self.loop.start(self.interval, now=False)
        self.expected = self.loop.starttime + self.interval

    def stop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    def reset(self) -> None:
        self.late = []

    def _tick(self) -> None:
        now = self.clock.seconds()
        if self.expected is not None and len(self.late) < self.limit:
            self.late.append(max(0.0, now - self.expected))
        # As LoopingCall schedules the next call: the next point of its grid.
        start, interval = self.loop.starttime, self.interval
        until = interval - ((now - start) % interval)
        self.expected = now + (until if now + until != now else interval)

    def summary(self) -> dict[str, float]:
        late = self.late or [0.0]
        return {
            "ticks": len(self.late),
            "max_ms": max(late) * 1000,
            "p99_ms": percentile(late, 0.99) * 1000,
            "p50_ms": percentile(late, 0.50) * 1000,
            "over20ms": sum(v > 0.020 for v in late),
            "over100ms": sum(v > 0.100 for v in late),
        }


def lagText(s: dict[str, float]) -> str:
    return (f"max {s['max_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, p50 {s['p50_ms']:.2f} ms"
            f" ({s['ticks']} ticks, {s['over20ms']} > 20 ms, {s['over100ms']} > 100 ms)")


# ---------------------------------------------------------------------------
# A node as a real twistd process, optionally with a lag monitor and cProfile.


def nodeWrapper(argv: list[str]) -> None:
    """
    C{integrity.py --_node OUT MONITOR PROFILE TWISTD-ARGS...}: run twistd in
    this process, with a L{LagMonitor} on its reactor if MONITOR is "1", and
    cProfile of the reactor thread if PROFILE is "signal" (between SIGUSR1
    and SIGUSR2) or "start" (from the start to SIGUSR2).  SIGUSR1 starts a
    measuring window; SIGUSR2 ends it and writes OUT.lag.json (and OUT.prof).
    """
    import cProfile

    out, monitor, profile = argv[0], argv[1] == "1", argv[2]
    from twisted.internet import reactor

    lag = LagMonitor(reactor) if monitor else None
    profiler = cProfile.Profile() if profile in ("signal", "start") else None

    def begin(*_: object) -> None:
        if lag is not None:
            lag.reset()
        if profiler is not None:
            profiler.enable()

    def end(*_: object) -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(out + ".prof")
        summary = lag.summary() if lag is not None else {}
        with open(out + ".lag.json.tmp", "w") as f:
            json.dump(summary, f)
        os.replace(out + ".lag.json.tmp", out + ".lag.json")

    def running() -> None:
        # twistd starts the services before the reactor runs: this is when they are done.
        with open(out + ".running.tmp", "w") as f:
            f.write(repr(time.time()))
        os.replace(out + ".running.tmp", out + ".running")

    signal.signal(signal.SIGUSR1, begin)
    signal.signal(signal.SIGUSR2, end)
    reactor.callWhenRunning(running)
    if lag is not None:
        reactor.callWhenRunning(lag.start)
    if profiler is not None and profile == "start":
        profiler.enable()
    from twisted.scripts.twistd import run as twistdRun

    sys.argv = ["twistd", *argv[3:]]
    twistdRun()


class IntegrityNode(Node):
    """
    A node run under L{nodeWrapper} (C{integrity.py --_node}): a lag
    monitor on its reactor if C{monitor}, cProfile if C{profile}, and the
    time its reactor started running.
    """

    startTimeout = 30.0

    def __init__(self, home: str, name: str, nodeType: str, key: str, port: int, *, debug: bool = False,
                 monitor: bool = False, profile: str = "none", options: dict[str, float] = FAST_OPTIONS) -> None:
        super().__init__(home, name, nodeType, key, port, options, debug=debug)
        self.monitor = monitor
        self.profile = profile
        self.outPrefix = os.path.join(home, "bench")

    def command(self) -> list[str]:
        return [sys.executable, os.path.abspath(__file__), "--_node", self.outPrefix,
                "1" if self.monitor else "0", self.profile, *self.twistdArguments()]

    def reactorRunningAfter(self) -> float | None:
        """Seconds from the start of the process to its reactor running (services started)."""
        try:
            with open(self.outPrefix + ".running") as f:
                return float(f.read()) - self.startedWall
        except (OSError, ValueError):
            return None

    def window(self) -> dict[str, Any]:
        """End the measuring window (SIGUSR2); its lag summary, once written."""
        target = self.outPrefix + ".lag.json"
        if os.path.exists(target):
            os.unlink(target)
        self.signal(signal.SIGUSR2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.alive():
            if os.path.exists(target):
                with open(target) as f:
                    return json.load(f)
            time.sleep(0.05)
        return {}


RECEIVED = re.compile(r"Received from (?:the )?master[^:]*: (\d+) files written, (\d+) deleted")
SENT = re.compile(r"Integrity sync with worker (\S+): (\d+) files sent \((\d+) bytes compressed\)")
COMPUTED = re.compile(r"Integrity computed: (\d+) files, (\d+) hashed, (\d+) unchanged, in ([0-9.]+) s")
PROBLEMS = re.compile(r"WARNING|ERROR|CRITICAL|Traceback")


# ---------------------------------------------------------------------------
# Trees.


def writeRandomFiles(home: str, count: int, seed: int = 1) -> list[str]:
    """C{count} files of 1-16 KiB of random bytes, half in etc/rules/, half in queue/agent-groups/."""
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        if i % 2 == 0:
            folder = os.path.join(home, "etc", "rules", f"set{i % 20:02d}")
            name = f"bench_{i:06d}.xml"
        else:
            folder = os.path.join(home, "queue", "agent-groups")
            name = f"{i:06d}"
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(rng.randbytes(rng.randint(1024, 16 * 1024)))
        paths.append(path)
    return paths


def writeAgents(home: str, count: int, seed: int = 2) -> None:
    """C{count} lines of etc/client.keys and as many queue/agent-groups files."""
    rng = random.Random(seed)
    with open(os.path.join(home, "etc", "client.keys"), "w") as f:
        for i in range(1, count + 1):
            f.write(f"{i:05d} name-{i:05d} any {rng.randbytes(32).hex()}\n")
    folder = os.path.join(home, "queue", "agent-groups")
    os.makedirs(folder, exist_ok=True)
    for i in range(1, count + 1):
        with open(os.path.join(folder, f"{i:05d}"), "w") as f:
            f.write("default\n")


def writeBigList(path: str, megabytes: int, seed: int = 3) -> int:
    """A CDB list of random C{key:value} lines (hex), about C{megabytes} MB."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    target = megabytes * 1024 * 1024
    rng = random.Random(seed)
    written = 0
    with open(path, "w") as f:
        while written < target:
            h = rng.randbytes(24 * 20000).hex()  # 20,000 lines of 32 + 1 + 16 + 1 characters
            block = "".join(f"{h[i:i + 32]}:{h[i + 32:i + 48]}\n" for i in range(0, len(h), 48))
            f.write(block)
            written += len(block)
    return written


def syncedFiles(home: str, table: SyncTable) -> dict[str, os.stat_result]:
    """Relative path -> lstat of every file the table synchronises under C{home} (independent walk)."""
    found: dict[str, os.stat_result] = {}
    for folder, _, names in os.walk(home):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), home)
            if table.ruleFor(rel) is not None:
                found[rel] = os.lstat(os.path.join(folder, name))
    return found


def md5Of(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def compareTrees(master: str, worker: str, table: SyncTable, checkContent: bool = True) -> list[str]:
    """What differs between the synchronised files of two homes (empty: identical)."""
    problems = []
    mine, theirs = syncedFiles(master, table), syncedFiles(worker, table)
    missing = sorted(set(mine) - set(theirs))
    extra = sorted(set(theirs) - set(mine))
    if missing:
        problems.append(f"{len(missing)} files missing on the worker, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} extra files on the worker, e.g. {extra[:3]}")
    badMD5, badMode, badTime = [], [], []
    for rel in sorted(set(mine) & set(theirs)):
        m, w = mine[rel], theirs[rel]
        rule = table.ruleFor(rel)
        if (w.st_mode & 0o7777) != rule.mode:
            badMode.append(f"{rel} {oct(w.st_mode & 0o7777)}")
        # The bundle carries mtimes as float seconds: ~0.2 us of precision now.
        if abs(m.st_mtime_ns - w.st_mtime_ns) >= 1000:
            badTime.append(rel)
        if checkContent and (m.st_size != w.st_size or
                             md5Of(os.path.join(master, rel)) != md5Of(os.path.join(worker, rel))):
            badMD5.append(rel)
    for what, bad in (("different content", badMD5), ("wrong mode", badMode), ("different mtime", badTime)):
        if bad:
            problems.append(f"{len(bad)} files with {what}, e.g. {bad[:3]}")
    return problems


def leftovers(home: str) -> list[str]:
    """The daemon's temporary files left under C{home}."""
    return [
        os.path.join(folder, n)
        for folder, _, names in os.walk(home) for n in names if n.startswith(".wazuhcluster-")
    ]


# ---------------------------------------------------------------------------
# 1. Hashing.


def sectionHashing(top: str, args: argparse.Namespace, results: Results) -> str:
    from wazuhcluster.sync.scan import IntegrityScanner

    results.section(f"1. Hashing {args.files:,} files: IntegrityScanner.scan() vs md5sum")
    home = os.path.join(top, "scan")
    table = SyncTable.load()
    took, paths = timed(lambda: writeRandomFiles(home, args.files))
    size = sum(os.path.getsize(p) for p in paths)
    results.add("tree", f"{len(paths):,} files, {fmtBytes(size)}, written in {took:.1f} s"
                " (half etc/rules/set*/, half queue/agent-groups/)")
    listing = b"".join(p.encode() + b"\0" for p in paths)
    # Past the scanner's racy window (50 ms), and the page cache warm for both.
    time.sleep(0.1)

    def md5sum() -> bytes:
        return run(["xargs", "-0", "md5sum"], input=listing, capture_output=True).stdout

    md5sum()  # warms the page cache
    rounds = args.repeat
    sums, colds, warms, pythons = [], [], [], []
    scanner = None
    result = None
    output = b""
    for _ in range(rounds):
        took, output = timed(md5sum)
        sums.append(took)
        scanner = IntegrityScanner(home, table)
        took, result = timed(scanner.scan)
        colds.append(took)

        def pythonLoop() -> None:
            for p in paths:
                with open(p, "rb") as f:
                    hashlib.md5(f.read(), usedforsecurity=False).hexdigest()

        pythons.append(timed(pythonLoop)[0])
    assert scanner is not None and result is not None
    if result.hashed != len(paths) or len(result.files) != len(paths):
        raise RuntimeError(f"cold scan hashed {result.hashed} of {len(paths)} files")
    expected = {}
    for line in output.decode().splitlines():
        digest, path = line.split(None, 1)
        expected[os.path.relpath(path, home)] = digest
    wrong = [p for p, e in result.files.items() if expected.get(p) != e.md5]
    if wrong:
        raise RuntimeError(f"{len(wrong)} MD5s differ from md5sum's, e.g. {wrong[:3]}")
    for _ in range(rounds):
        took, again = timed(scanner.scan)
        warms.append(took)
        if again.hashed or again.reused != len(paths):
            raise RuntimeError(f"warm re-scan hashed {again.hashed}, reused {again.reused}")
    md5sumT, coldT, warmT, pyT = (statistics.median(v) for v in (sums, colds, warms, pythons))
    results.add("md5sum (xargs -0 md5sum, one process)", f"{md5sumT * 1000:.0f} ms"
                f"  [runs {', '.join(f'{v * 1000:.0f}' for v in sums)}]")
    results.add("cold scan (fresh IntegrityScanner)", f"{coldT * 1000:.0f} ms"
                f"  [runs {', '.join(f'{v * 1000:.0f}' for v in colds)}];"
                f" {len(paths) / coldT:,.0f} files/s, {size / coldT / 2**20:.0f} MB/s")
    results.add("  ratio cold scan / md5sum", f"**{coldT / md5sumT:.2f}x**  (MD5s identical to md5sum's)")
    results.add("  for scale: open+read+hashlib.md5 loop in Python", f"{pyT * 1000:.0f} ms"
                f" ({pyT / md5sumT:.2f}x md5sum)")
    results.add("warm re-scan (nothing changed)", f"{warmT * 1000:.1f} ms"
                f"  [runs {', '.join(f'{v * 1000:.1f}' for v in warms)}];"
                f" {warmT / len(paths) * 1e6:.1f} us/file")
    results.add("  ratio warm / cold scan", f"**{warmT / coldT:.3f}x**  (0 hashed, {len(paths):,} reused)")
    results.add("page cache", "warm for every timed run (md5sum ran once untimed first)")
    return home


# ---------------------------------------------------------------------------
# 2. Reactor stalls during a master round (child process, own reactor).


def stallChild(home: str, out: str, warmRounds: int) -> None:
    """C{integrity.py --_stall HOME OUT N}: runs in its own process."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    from wazuhcluster.home import WazuhHome
    from wazuhcluster.internal_options import InternalOptions
    from wazuhcluster.master.integrity import MasterIntegrity

    async def main(reactor: Any) -> None:
        integrity = MasterIntegrity(
            WazuhHome(home), SyncTable.load(), InternalOptions(), reactor, lambda: {}, watch=False
        )
        lag = LagMonitor(reactor)
        lag.start()
        await task.deferLater(reactor, 0.3, lambda: None)
        report: dict[str, Any] = {}

        lag.reset()
        started = time.perf_counter()
        await task.deferLater(reactor, 2.0, lambda: None)
        report["baseline"] = {**lag.summary(), "seconds": time.perf_counter() - started}

        lag.reset()
        started = time.perf_counter()
        cpu = time.process_time()
        result = await integrity.recalculate()
        report["cold"] = {**lag.summary(), "seconds": time.perf_counter() - started,
                          "cpu": time.process_time() - cpu, "hashed": result.hashed}

        lag.reset()
        started = time.perf_counter()
        hashed = 0
        for _ in range(warmRounds):
            hashed += (await integrity.recalculate()).hashed
        report["warm"] = {**lag.summary(), "seconds": (time.perf_counter() - started) / warmRounds,
                          "hashed": hashed, "rounds": warmRounds}
        lag.stop()
        with open(out, "w") as f:
            json.dump(report, f)

    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))


def sectionStalls(home: str, top: str, args: argparse.Namespace, results: Results) -> None:
    results.section("2. Reactor stalls during a MasterIntegrity round (5 ms LoopingCall, same process)")
    out = os.path.join(top, "stall.json")
    run([sys.executable, os.path.abspath(__file__), "--_stall", home, out, str(args.repeat)],
        cwd=top, timeout=STALL_CHILD_TIMEOUT)
    with open(out) as f:
        report = json.load(f)
    base, cold, warm = report["baseline"], report["cold"], report["warm"]
    results.add("baseline: loop alone, 2 s", lagText(base))
    results.add(f"cold round ({cold['hashed']:,} hashed, {cold['seconds'] * 1000:.0f} ms,"
                f" CPU {cold['cpu'] * 1000:.0f} ms)", lagText(cold))
    results.add(f"warm rounds ({warm['rounds']} x {warm['seconds'] * 1000:.0f} ms, nothing hashed)",
                lagText(warm))
    results.add("  ratio max stall cold round / baseline",
                f"**{cold['max_ms'] / max(base['max_ms'], 0.01):.1f}x**"
                f" ({cold['max_ms']:.1f} vs {base['max_ms']:.1f} ms); p99"
                f" {cold['p99_ms']:.1f} vs {base['p99_ms']:.1f} ms")
    results.add("  ratio max stall warm rounds / baseline",
                f"{warm['max_ms'] / max(base['max_ms'], 0.01):.1f}x"
                f" ({warm['max_ms']:.1f} vs {base['max_ms']:.1f} ms)")


# ---------------------------------------------------------------------------
# 3 and 5. A fresh worker's full sync.


def fullSync(
    top: str,
    label: str,
    populate: Callable[[str], str],
    timeout: float,
    args: argparse.Namespace,
    results: Results,
) -> None:
    """Populate a master, copy the tree with cp -a, then sync a fresh worker and time it."""
    base = os.path.join(top, label)
    masterHome, workerHome, cpHome = (os.path.join(base, n) for n in ("master", "worker", "cp"))
    os.makedirs(masterHome)
    table = SyncTable.load()
    took, what = timed(lambda: populate(masterHome))
    files = syncedFiles(masterHome, table)
    size = sum(st.st_size for st in files.values())
    results.add("tree", f"{what}: {len(files):,} files, {fmtBytes(size)} (written in {took:.1f} s)")

    # Baseline: cp -a of the synchronised folders into an empty folder, cache warm.
    sources = set()
    for rel in files:
        rule = table.ruleFor(rel)
        if rule.names is not None and not rule.recursive:
            sources.add(os.path.join(masterHome, rel))
        else:
            sources.add(os.path.join(masterHome, rule.folder.rstrip("/")))
    os.sync()
    os.makedirs(cpHome)
    cpT, _ = timed(lambda: run(["cp", "-a", *sorted(sources), cpHome]))
    syncT, _ = timed(os.sync)
    copied = sum(len(n) for _, _, n in os.walk(cpHome))
    results.add("baseline cp -a (same files, empty folder)", f"{cpT:.2f} s  (+ sync: {cpT + syncT:.2f} s);"
                f" {copied:,} files")
    dropTree(cpHome)

    key = secrets.token_hex(16)
    port = freePort()
    pyspy = findPySpy() if args.profile else None
    cProfiled = args.profile and pyspy is None
    master = IntegrityNode(masterHome, MASTER_NAME, "master", key, port, debug=True, monitor=True,
                  profile="signal" if cProfiled else "none")
    worker = IntegrityNode(workerHome, f"bench-{label}-worker", "worker", key, port, debug=True, monitor=True,
                  profile="start" if cProfiled else "none")
    try:
        master.start()
        master.waitListening()
        listening = time.perf_counter() - master.startedAt
        mlog = LogWatcher(master.log, master.startedAt)
        deadline = time.monotonic() + FIRST_SCAN_TIMEOUT
        first = None
        while first is None and time.monotonic() < deadline:
            master.assertAlive()
            mlog.poll()
            first = mlog.first(COMPUTED)
            time.sleep(0.05)
        if first is None:
            raise RuntimeError(f"the master's first scan did not end in {FIRST_SCAN_TIMEOUT}s")
        m = COMPUTED.search(first[1])
        runningAfter = master.reactorRunningAfter()
        results.add("master's start: listening / reactor running / first scan done",
                    f"{listening:.1f} s / {runningAfter or 0:.1f} s / {first[0]:.1f} s after its start"
                    f" (scan: {int(m[1]):,} files, {int(m[2]):,} hashed, in {m[4]} s)")
        time.sleep(1.2)  # a warm rescan or two, for the figure below
        mlog.poll()
        hwmBefore = master.hwm()
        master.signal(signal.SIGUSR1)
        cpuMaster0 = master.cpu() or 0.0

        worker.start()
        if pyspy:
            master.startSpy(pyspy)
            worker.startSpy(pyspy)
        t0 = worker.startedAt
        wlog = LogWatcher(worker.log, t0)
        mlog.t0 = t0
        mlog.lines.clear()
        deadline = time.monotonic() + timeout
        done = None
        while time.monotonic() < deadline:
            worker.assertAlive()
            master.assertAlive()
            wlog.poll()
            mlog.poll()
            master.sampleRSS()
            worker.sampleRSS()
            done = wlog.first(RECEIVED)
            if done is not None:
                break
            time.sleep(0.1)
        if done is None:
            raise RuntimeError(f"the worker did not receive the files in {timeout:.0f} s")
        elapsed = done[0]
        sent = None
        settle = time.monotonic() + 15
        while sent is None and time.monotonic() < settle:
            mlog.poll()
            sent = mlog.first(SENT)
            time.sleep(0.05)
        cpuMaster = (master.cpu() or 0.0) - cpuMaster0
        cpuWorker = worker.cpu() or 0.0
        master.stopSpy()
        worker.stopSpy()
        masterLag, workerLag = master.window(), worker.window()
        hwmMaster, hwmWorker = master.hwm(), worker.hwm()
        # The next cycle must find everything in sync.
        inSync = None
        settle = time.monotonic() + 20
        while inSync is None and time.monotonic() < settle:
            wlog.poll()
            inSync = next((x for x in wlog.all("Files in sync with the master") if x[0] > elapsed), None)
            time.sleep(0.1)
        mlog.poll()
        scans = [COMPUTED.search(line) for at, line in mlog.all(COMPUTED)]
    except BaseException:
        dumpTails([master, worker])
        raise
    finally:
        stopAll([worker, master])

    connected = wlog.first("Successfully connected")
    check = wlog.first("Integrity check:")
    written = int(RECEIVED.search(done[1])[1])
    results.add("fresh worker: start -> files written (its log)", f"**{elapsed:.1f} s**"
                f"  ({written:,} files written)")
    steps = []
    if connected:
        steps.append(f"connected {connected[0]:.1f} s")
    if check:
        steps.append(f"master's answer (manifest compared) {check[0]:.1f} s")
    steps.append(f"files written {elapsed:.1f} s")
    results.add("  timeline (bench's poll, +-0.1 s)", ", ".join(steps))
    if check:
        span = max(elapsed - check[0], 1e-3)
        results.add("  transfer + staging + commit", f"{span:.1f} s ({written / span:,.0f} files/s,"
                    f" {size / span / 2**20:.1f} MB/s of content)")
    results.add("  ratio sync / cp -a", f"**{elapsed / cpT:.1f}x**  (/ cp -a + sync: {elapsed / (cpT + syncT):.1f}x)")
    if sent:
        m = SENT.search(sent[1])
        compressed = int(m[3])
        results.add("bytes sent (master's log, compressed)", f"{fmtBytes(compressed)} for {int(m[2]):,} files;"
                    f" {compressed / max(size, 1) * 100:.0f}% of the {fmtBytes(size)} of content")
    else:
        results.note(f"{label}: no 'files sent' line in the master's log")
    results.add("peak RSS master (VmHWM)", f"**{mb(hwmMaster)}**  (before the worker: {mb(hwmBefore)};"
                f" max VmRSS polled {mb(master.peakRSS)})")
    results.add("peak RSS worker (VmHWM)", f"**{mb(hwmWorker)}**  (max VmRSS polled {mb(worker.peakRSS)})")
    results.add("CPU during the sync: master / worker", f"{cpuMaster:.1f} s / {cpuWorker:.1f} s"
                f" (over {elapsed:.1f} s of wall time, 2 cores)")
    if masterLag:
        results.add("master's reactor lateness during the sync", lagText(masterLag))
    if workerLag:
        results.add("worker's reactor lateness, start -> written", lagText(workerLag))
    if scans:
        hashed = [int(m[2]) for m in scans]
        secs = [float(m[4]) for m in scans]
        results.add("master's rescans meanwhile (every 1 s)",
                    f"{len(scans)}, {statistics.median(secs):.2f} s median, {max(secs):.2f} s max,"
                    f" {sum(hashed):,} files re-hashed in all")
    results.add("next cycle says in sync", f"yes, {inSync[0] - elapsed:.1f} s later" if inSync else "NOT SEEN")
    problems = compareTrees(masterHome, workerHome, table)
    stale = leftovers(workerHome)
    results.add("worker's tree vs master's (paths, MD5, mode, mtime to 1 us)",
                "identical" if not problems else "; ".join(problems))
    if stale:
        results.note(f"{label}: {len(stale)} temporary files left on the worker")
    for node, watcher in (("master", mlog), ("worker", wlog)):
        for at, line in watcher.all(PROBLEMS)[:5]:
            results.note(f"{label} {node} log at {at:.1f} s: {line[20:]}")
    if args.profile:
        for node in (master, worker):
            if pyspy:
                printSpy(node.spyOutput, f"{label}: py-spy of {node.name}, worker start -> files written")
            else:
                printProfile(node.outPrefix + ".prof", f"{label}: cProfile of the {node.name} reactor thread")
    dropTree(base)


def printProfile(path: str, title: str) -> None:
    if not os.path.exists(path):
        print(f"\n(no profile at {path})")
        return
    print(f"\n== {title} (tottime; threads are not profiled)")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(r"wazuhcluster/", 15)


def sectionFullSync(top: str, args: argparse.Namespace, results: Results) -> None:
    results.section(f"3. Full sync to a fresh worker: ruleset + {args.agents:,} client.keys lines"
                    f" + {args.agents:,} agent-groups files")

    def populate(home: str) -> str:
        writeRuleset(home)
        writeAgents(home, args.agents)
        return "ruleset + client.keys + agent-groups"

    fullSync(top, "full", populate, FULL_SYNC_TIMEOUT, args, results)


def sectionBig(top: str, args: argparse.Namespace, results: Results) -> None:
    results.section(f"5. A {args.big_mb} MB CDB list to a fresh worker (--big)")

    def populate(home: str) -> str:
        writeBigList(os.path.join(home, "etc", "lists", "big-list"), args.big_mb)
        return "etc/lists/big-list, random hex key:value lines"

    fullSync(top, "big", populate, BIG_SYNC_TIMEOUT, args, results)
    results.add("issue's target", "master and worker each under 150 MB RSS")


# ---------------------------------------------------------------------------
# 4. Propagation of one changed rule to N workers.


def sectionPropagation(top: str, args: argparse.Namespace, results: Results) -> None:
    n = args.workers
    options = FAST_OPTIONS if args.prop_periods == "fast" else DEFAULT_PERIODS
    results.section(f"4. One changed rule to {n} workers ({args.changes} changes, {args.prop_agents:,} agents'"
                    f" files present, {args.prop_periods} periods: sync_integrity={options['sync_integrity']},"
                    f" recalculate_integrity={options['recalculate_integrity']})")
    base = os.path.join(top, "prop")
    masterHome = os.path.join(base, "master")
    os.makedirs(masterHome)
    count = writeRuleset(masterHome)
    if args.prop_agents:
        writeAgents(masterHome, args.prop_agents)
        count += args.prop_agents + 1
    table = SyncTable.load()
    key, port = secrets.token_hex(16), freePort()
    master = IntegrityNode(masterHome, MASTER_NAME, "master", key, port, options=options)
    workers = [IntegrityNode(os.path.join(base, f"worker{i:02d}"), f"bench-prop-{i:02d}", "worker", key, port,
                             options=options)
               for i in range(n)]
    rng = random.Random(4)
    try:
        master.start()
        master.waitListening()
        deadline = time.monotonic() + master.startTimeout
        while master.reactorRunningAfter() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        results.add("master's start: listening / reactor running",
                    f"{time.perf_counter() - master.startedAt:.1f} s / {master.reactorRunningAfter() or 0:.1f} s"
                    " after its start")
        started = time.perf_counter()
        for w in workers:
            w.start()
        watchers = [LogWatcher(w.log, started) for w in workers]
        fanOutTimeout = FAN_OUT_TIMEOUT + n * count / 1000
        deadline = time.monotonic() + fanOutTimeout
        arrived: dict[int, float] = {}
        while len(arrived) < n and time.monotonic() < deadline:
            for i, (w, watcher) in enumerate(zip(workers, watchers)):
                if i in arrived:
                    continue
                w.assertAlive()
                watcher.poll()
                got = watcher.first(RECEIVED)
                if got:
                    arrived[i] = got[0]
            time.sleep(0.05)
        if len(arrived) < n:
            raise RuntimeError(f"only {len(arrived)} of {n} workers received the ruleset in {fanOutTimeout:.0f}s")
        results.add(f"{n} fresh workers started at once -> all have the master's files",
                    f"{max(arrived.values()):.1f} s (first {min(arrived.values()):.1f} s; {count} files each)")
        for w in workers:
            problems = compareTrees(masterHome, w.home, table)
            if problems:
                raise RuntimeError(f"{w.name} differs after its first sync: {problems}")
        time.sleep(1.5)

        rules = sorted(os.listdir(os.path.join(masterHome, "etc", "rules")))
        chosen = rules[:: max(1, len(rules) // args.changes)][: args.changes]
        before = {i: syncedFiles(w.home, table) for i, w in enumerate(workers)}
        for watcher in watchers:
            watcher.poll()
        receivedBefore = [len(watcher.all(RECEIVED)) for watcher in watchers]
        loadBefore = os.getloadavg()[0]
        cpuBefore = [master.cpu() or 0.0] + [w.cpu() or 0.0 for w in workers]
        phaseStart = time.perf_counter()

        alls, firsts, spreads = [], [], []
        for index, name in enumerate(chosen):
            rel = f"etc/rules/{name}"
            target = os.path.join(masterHome, rel)
            with open(target, "rb") as f:
                content = f.read()
            content += f"<!-- bench change {index} {secrets.token_hex(8)} -->\n".encode()
            newMD5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
            temporary = target + ".tmp"  # '.tmp' names are never synchronised
            with open(temporary, "wb") as f:
                f.write(content)
            os.replace(temporary, target)
            t0 = time.perf_counter()
            seen: dict[int, float] = {}
            lastStat: dict[int, tuple] = {}
            deadline = t0 + CHANGE_TIMEOUT
            while len(seen) < n and time.perf_counter() < deadline:
                for i, w in enumerate(workers):
                    if i in seen:
                        continue
                    path = os.path.join(w.home, rel)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    key_ = (st.st_ino, st.st_size, st.st_mtime_ns)
                    if lastStat.get(i) == key_:
                        continue
                    lastStat[i] = key_
                    if md5Of(path) == newMD5:
                        seen[i] = time.perf_counter() - t0
                time.sleep(0.005)
            if len(seen) < n:
                raise RuntimeError(f"change {index} reached {len(seen)} of {n} workers in {CHANGE_TIMEOUT}s")
            alls.append(max(seen.values()))
            firsts.append(min(seen.values()))
            spreads.append(max(seen.values()) - min(seen.values()))
            time.sleep(rng.uniform(0.3, 0.9))  # out of step with the 1 s cycles
        phase = time.perf_counter() - phaseStart
        cpuAfter = [master.cpu() or 0.0] + [w.cpu() or 0.0 for w in workers]
        loadAfter = os.getloadavg()[0]
        time.sleep(1.5)
        for watcher in watchers:
            watcher.poll()
        writes = []
        for watcher, before_ in zip(watchers, receivedBefore):
            writes.append([int(RECEIVED.search(line)[1]) for _, line in watcher.all(RECEIVED)[before_:]])
        after = {i: syncedFiles(w.home, table) for i, w in enumerate(workers)}
    except BaseException:
        dumpTails([master, *workers[:3]])
        raise
    finally:
        stopAll([*workers, master])

    changedRels = {f"etc/rules/{name}" for name in chosen}
    rewritten = 0
    for i in range(n):
        for rel, st in before[i].items():
            now = after[i].get(rel)
            if rel not in changedRels and (now is None or (now.st_ino, now.st_mtime_ns) != (st.st_ino, st.st_mtime_ns)):
                rewritten += 1
    results.add("all workers have the new MD5: p50 / p99 / worst",
                f"**{statistics.median(alls) * 1000:.0f} ms / {percentile(alls, 0.99) * 1000:.0f} ms /"
                f" {max(alls) * 1000:.0f} ms**  (p25 {percentile(alls, 0.25) * 1000:.0f},"
                f" p75 {percentile(alls, 0.75) * 1000:.0f}); none missed: every change reached every worker"
                f" within {CHANGE_TIMEOUT:.0f} s")
    results.add("first worker has it: median / worst",
                f"{statistics.median(firsts) * 1000:.0f} ms / {max(firsts) * 1000:.0f} ms;"
                f" spread first->last median {statistics.median(spreads) * 1000:.0f} ms")
    results.add("  ratio median / sync_integrity period",
                f"{statistics.median(alls) / options['sync_integrity']:.2f}x of {options['sync_integrity']} s")
    results.add("  all changes, ms", ", ".join(f"{v * 1000:.0f}" for v in alls))
    flat = [x for w in writes for x in w]
    results.add("files written per worker sync (workers' logs)",
                f"{len(flat)} syncs wrote files, {sum(flat)} files in all for {n} x {len(chosen)} changes"
                + ("" if sum(flat) == n * len(chosen) else "  (expected exactly one per change per worker)"))
    results.add("other files rewritten on the workers", f"{rewritten}  (inode or mtime changed; expected 0)")
    cpu = [a - b for a, b in zip(cpuAfter, cpuBefore)]
    results.add("CPU over the change phase: master / all workers",
                f"{cpu[0]:.1f} s / {sum(cpu[1:]):.1f} s over {phase:.0f} s wall"
                f" ({(cpu[0] + sum(cpu[1:])) / phase * 100:.0f}% of one core);"
                f" load {loadBefore:.2f} -> {loadAfter:.2f}")
    dropTree(base)


# ---------------------------------------------------------------------------

def main(args: argparse.Namespace) -> None:
    exitOnTerminate()
    results = Results()
    top = tempfile.mkdtemp(prefix="wazuhcluster-bench-integrity-", dir=args.tmp)
    started = time.perf_counter()
    try:
        machine(results, top, tools=("md5sum", "cp"))
        sections = set(args.sections.split(","))
        if sections & {"1", "2"}:
            home = sectionHashing(top, args, results)
            if "2" in sections:
                sectionStalls(home, top, args, results)
            dropTree(home)
        if "3" in sections:
            sectionFullSync(top, args, results)
        if "4" in sections:
            sectionPropagation(top, args, results)
        if args.big or "5" in sections:
            sectionBig(top, args, results)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    results.section("Whole run")
    results.add("wall time of the bench", f"{time.perf_counter() - started:.0f} s")
    print("\n\nSUMMARY (wazuhcluster bench/integrity.py)")
    print(results.table())
    for note in results.notes:
        print(f"NOTE: {note}")


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files hashed in 1 and 2")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing in 1 and 2 (median)")
    parser.add_argument("--agents", type=int, default=50_000,
                        help="client.keys lines and agent-groups files in 3")
    parser.add_argument("--workers", type=int, default=10, help="worker processes in 4")
    parser.add_argument("--changes", type=int, default=20, help="rule changes in 4")
    parser.add_argument("--prop-agents", type=int, default=50_000,
                        help="agents (client.keys lines and agent-groups files) on the master in 4")
    parser.add_argument("--prop-periods", choices=("default", "fast"), default="default",
                        help="periods of the nodes in 4: Wazuh's defaults (9 s, 8 s) or 1 s")
    parser.add_argument("--big", action="store_true", help="also run 5: a big CDB list (slow, disk)")
    parser.add_argument("--big-mb", type=int, default=500, help="size of the list of 5, in MB")
    parser.add_argument("--sections", default="1,2,3,4", help="which of 1,2,3,4,5 to run")
    parser.add_argument("--tmp", default=None, help="where the temporary trees go (default: $TMPDIR)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the master and the worker during 3 and 5: py-spy (every"
                        " thread) if installed, else cProfile of the reactor threads; the timings"
                        " of 3 and 5 are then inflated")
    args = parser.parse_args(argv)
    if not 100 <= args.files <= 200_000:
        parser.error("--files from 100 to 200000")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat from 1 to 10")
    if not 1 <= args.agents <= 99_999:
        parser.error("--agents from 1 to 99999 (agent IDs have 5 digits)")
    if not 1 <= args.workers <= 30:
        parser.error("--workers from 1 to 30")
    if not 1 <= args.changes <= 100:
        parser.error("--changes from 1 to 100")
    if not 1 <= args.big_mb <= 4096:
        parser.error("--big-mb from 1 to 4096")
    problem = rulesetProblem()
    if problem:
        parser.error(problem)
    return args


def entry() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_node":
        nodeWrapper(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--_stall":
        stallChild(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    main(parseArguments())


if __name__ == "__main__":
    entry()
