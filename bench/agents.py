#!/usr/bin/env python
"""
Agent-info benchmark of the cluster daemon: the first full sync of the
agents' statuses to the master, then a steady state where a few agents
change each cycle, and C{cluster_control -a} over all of them.

    python bench/agents.py [--agents 50000] [--workers 10] [--cycles 5]
                           [--change 0.01] [--period 2] [--profile]

What it measures (see bench/README.md), against baselines run in the same
command:

 1. Baselines, in this process, before any node runs: C{cp -a} of every
    worker's C{queue/agent-info/} into an empty folder (landing the files
    with their mtimes, nothing else), and the master's own apply step
    (L{MasterAgentInfo}'s per-batch write of statuses, the same code the
    daemon runs) over the same batches: all statuses, then one cycle's;
    for scale, C{os.utime} of one cycle's files, and one save of the
    record of every agent's node.
 2. First full sync: a real master and C{--workers} real workers as
    separate C{twistd -n wazuhcluster} processes on 127.0.0.1, with the
    same C{--agents}-line C{etc/client.keys} on every node (same bytes,
    same mtime: integrity has nothing to send) and each agent's status
    file on one worker (agent i on worker i % W).  Seconds from the
    workers' start until the master holds every status, each worker's own
    "Sent ..." figures, the master's CPU seconds, the bytes sent, the
    master's RSS.  Then the master's copies and its record of each agent's
    node are checked.
 3. Idle cycles (nothing changes): the master's and the workers' CPU and
    the wire bytes per window, the baseline of 4.
 4. C{--cycles} steady cycles: C{--change} of the agents (spread evenly
    over the workers) get a new keep-alive; the bench waits until the
    master holds every new status and every worker logged it sent them:
    wall time (end to end, and the workers' logged sync time), the
    master's CPU per cycle (and above idle), the workers' CPU, bytes, RSS.
 5. C{cluster_control -a} over all agents on the master, with
    C{-fs Active}, and through one worker; against C{cluster_control -l}
    (the same process start, one round trip).

Every wait is bounded in time; every process started is stopped and the
temporary trees removed, whatever happens.  Nothing here changes the daemon.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from figures import Results, percentile  # bench/figures.py
from processes import (  # bench/processes.py
    MASTER_NAME, SPY_IDLE_POOL, LogWatcher, Node, NodeCluster, dropTree, dumpTails, exitOnTerminate,
    findPySpy, fmtBytes, machine, mb, printSpy,
)
from trees import AgentLayout, agentIP, agentName, countStatuses, statusName, writeStatus  # bench/trees.py
from wazuhcluster.agents.agentinfo import keepAliveText

#: Wazuh's performance suite: seconds allowed per stable agent-info sync on the master, at 50,000 agents.
WAZUH_ALLOWANCE = 3.0

#: Hard bounds, whatever the arguments say.
FIRST_SYNC_TIMEOUT = 240.0
CYCLE_TIMEOUT = 60.0
COMMAND_TIMEOUT = 300.0

# "Sent 5000 agent statuses (123456 bytes compressed) to the master in 1.234 s (5000 taken, ...)."
SENT = re.compile(
    r"Sent (\d+) agent statuses(?: \((\d+) bytes compressed\))? to the master in ([0-9.]+) s"
    r" \((\d+) taken, (\d+) older than the master's, (\d+) of agents not registered there\)"
)
JOINED = "Successfully connected to master"
PROBLEMS = re.compile(r"WARNING|ERROR|CRITICAL|Traceback")


def options(period: float) -> dict[str, float]:
    """The internal options of every node: agent-info every C{period} s, nothing dropped for silence."""
    return {
        "sync_agent_info": period,
        "sync_integrity": 2,
        "recalculate_integrity": 2,
        "connection_retry": 1,
        "keep_alive": 10,
        "check_worker_lastkeepalive": 600,
        "max_allowed_time_without_keepalive": 1200,
        "handshake_timeout": 60,
    }


# ---------------------------------------------------------------------------
# Small helpers.


def stats(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """mean / median / max of C{values} (times C{scale})."""
    v = [x * scale for x in values]
    return (f"mean {statistics.mean(v):.{digits}f}, median {statistics.median(v):.{digits}f},"
            f" max {max(v):.{digits}f}")


def wireBytesReceived(port: int) -> int | None:
    """
    TCP payload bytes the master's side of every established connection on
    C{port} received (C{ss -ti}: TLS records, AMP, every command; only the
    connections open now count).
    """
    try:
        out = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = [int(m) for m in re.findall(r"bytes_received:(\d+)", out)]
    return sum(found) if found else None


def childrenCPU() -> float:
    """User + system seconds of this process's children that were waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class AgentLog(LogWatcher):
    """A worker's cluster.log, with its "Sent ..." lines."""

    def sent(self, t0: float) -> list[tuple[float, re.Match]]:
        """The "Sent ..." lines read at or after C{t0}, with their match."""
        return [(at, SENT.search(line)) for at, line in self.since(t0, SENT)]


# ---------------------------------------------------------------------------
# The homes.


class Layout(AgentLayout):
    """Where every agent lives, the trees of the run, and each status's mtime."""

    def __init__(self, top: str, agents: int, workers: int) -> None:
        super().__init__(top, agents, workers)
        self.keys = b""
        self.keysMtimeNs = 0
        #: Agent i's status mtime on its worker, in ns (index 0 unused).
        self.mtimes = [0] * (agents + 1)

    def writeKeys(self, seed: int = 5) -> None:
        rng = random.Random(seed)
        self.keys = "".join(
            f"{i:05d} {agentName(i)} {agentIP(i)} {rng.randbytes(32).hex()}\n" for i in range(1, self.agents + 1)
        ).encode()
        self.keysMtimeNs = time.time_ns() - 3600 * 10**9

    def putKeys(self, home: str) -> None:
        """The same client.keys, same bytes and same mtime, in C{home}."""
        path = os.path.join(home, "etc", "client.keys")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self.keys)
        os.chmod(path, 0o640)
        os.utime(path, ns=(self.keysMtimeNs, self.keysMtimeNs))

    def writeStatuses(self, seed: int = 6) -> None:
        """Every agent's status on its worker, its last keep-alive within the last minute."""
        rng = random.Random(seed)
        now = time.time_ns()
        for w, home in enumerate(self.workerHomes):
            folder = self.statusFolder(home)
            os.makedirs(folder, exist_ok=True)
            for i in self.agentsOf(w):
                self.mtimes[i] = now - rng.randrange(5 * 10**9, 60 * 10**9)
                writeStatus(folder, i, self.mtimes[i])


# ---------------------------------------------------------------------------
# 1. Baselines, in this process.


def baselines(layout: Layout, args: argparse.Namespace, results: Results) -> dict[str, float]:
    """C{cp -a} of the statuses, and the master's apply step in this process; their figures."""
    from twisted.internet.task import Clock

    from wazuhcluster.home import WazuhHome
    from wazuhcluster.internal_options import InternalOptions
    from wazuhcluster.master.agentinfo import MasterAgentInfo

    results.section("1. Baselines in this process: cp -a, and the master's apply step alone")
    out: dict[str, float] = {}

    # cp -a of each worker's agent-info folder into one empty folder.
    target = os.path.join(layout.top, "cp")
    os.makedirs(target)
    os.sync()
    started = time.perf_counter()
    for w, home in enumerate(layout.workerHomes):
        subprocess.run(["cp", "-a", layout.statusFolder(home), os.path.join(target, f"w{w:02d}")],
                       check=True, timeout=COMMAND_TIMEOUT)
    out["cp"] = time.perf_counter() - started
    results.add(f"cp -a of the {layout.workers} workers' queue/agent-info ({layout.agents:,} files)",
                f"{out['cp']:.2f} s")
    dropTree(target)

    # The master's own apply step (MasterAgentInfo._applyBlocking), batch by batch, as the daemon calls it.
    home = os.path.join(layout.top, "apply")
    layout.putKeys(home)
    os.makedirs(layout.statusFolder(home))
    agentInfo = MasterAgentInfo(WazuhHome(home), InternalOptions(), Clock(), MASTER_NAME, lambda _: True)
    batches = []
    for w, workerHome in enumerate(layout.workerHomes):
        folder = layout.statusFolder(workerHome)
        batch = []
        for i in layout.agentsOf(w):
            with open(os.path.join(folder, statusName(i)), "rb") as f:
                batch.append((statusName(i), layout.mtimes[i] / 1e9, f.read()))
        batches.append(batch)
    agentInfo.registered.statusNames()  # client.keys parsed once, as the running master has by then
    os.sync()  # the writeback of the trees written so far does not weigh on the timing
    wall, cpu = time.perf_counter(), time.process_time()
    for w, batch in enumerate(batches):
        counts = applyBatch(agentInfo, layout.workerNames[w], batch)
        if counts["written"] != len(batch):
            raise RuntimeError(f"in-process apply: {counts} for {len(batch)} statuses")
    out["applyAllWall"], out["applyAllCPU"] = time.perf_counter() - wall, time.process_time() - cpu
    results.add(f"master's apply step, all {layout.agents:,} statuses in {layout.workers} batches",
                f"{out['applyAllWall']:.2f} s wall, {out['applyAllCPU']:.2f} s CPU"
                f" ({out['applyAllCPU'] / layout.agents * 1e6:.0f} us CPU/status)")

    # One steady cycle's worth: the changed statuses of each worker, newer by a second, 3 times.
    share = layout.changedPerWorker(args.change)
    rng = random.Random(8)
    walls, cpus = [], []
    for round_ in range(3):
        chosen = [rng.sample(list(layout.agentsOf(w)), share[w]) for w in range(layout.workers)]
        wall, cpu = time.perf_counter(), time.process_time()
        for w, agents in enumerate(chosen):
            batch = [(statusName(i), layout.mtimes[i] / 1e9 + 1 + round_, keepAliveText(agentName(i), agentIP(i)))
                     for i in agents]
            applyBatch(agentInfo, layout.workerNames[w], batch)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    out["applyCycleWall"], out["applyCycleCPU"] = statistics.median(walls), statistics.median(cpus)
    results.add(f"master's apply step, one cycle ({sum(share):,} statuses in {layout.workers} batches)",
                f"{out['applyCycleWall'] * 1000:.0f} ms wall, {out['applyCycleCPU'] * 1000:.0f} ms CPU"
                f" (median of 3: {', '.join(f'{v * 1000:.0f}' for v in cpus)} ms CPU)")

    # For scale: what the same cycle costs when only the time of each status changes (the common case: a
    # keep-alive repeats its text), with os.utime on the master's copy instead of a new file renamed over it.
    folder = layout.statusFolder(home)
    utimes = []
    for round_ in range(3):
        chosen = [i for w in range(layout.workers) for i in rng.sample(list(layout.agentsOf(w)), share[w])]
        cpu = time.process_time()
        for i in chosen:
            stamp = layout.mtimes[i] + 10**9 * (5 + round_)
            os.utime(os.path.join(folder, statusName(i)), ns=(stamp, stamp))
        utimes.append(time.process_time() - cpu)
    out["utimeCycleCPU"] = statistics.median(utimes)
    results.add("  for scale: os.utime of as many of the master's copies (time alone changed)",
                f"{out['utimeCycleCPU'] * 1000:.1f} ms CPU (median of 3),"
                f" {out['utimeCycleCPU'] / max(out['applyCycleCPU'], 1e-9) * 100:.0f}% of the apply step")

    # For scale: one whole save of the record of every agent's node (queue/cluster/agent-nodes.json),
    # which the master writes when an agent's node changes (and for times alone, now and then).
    saves = []
    for k in range(3):
        agentInfo.nodes.record(statusName(1), layout.workerNames[(k + 1) % layout.workers], layout.mtimes[1])
        started = time.perf_counter()
        if saveNodes(agentInfo.nodes):
            saves.append(time.perf_counter() - started)
    if saves:
        out["save"] = statistics.median(saves)
        size = os.path.getsize(os.path.join(home, "queue", "cluster", "agent-nodes.json"))
        results.add(f"  for scale: one save of agent-nodes.json ({layout.agents:,} agents, {fmtBytes(size)})",
                    f"{out['save'] * 1000:.0f} ms wall (median of 3; written when an agent's node changes)")
    dropTree(home)
    return out


def applyBatch(agentInfo: Any, node: str, batch: list[tuple[str, float, bytes]]) -> dict[str, int]:
    """The master's apply step for one worker's batch, as its thread runs it (the clock: now)."""
    if "now" in inspect.signature(agentInfo._applyBlocking).parameters:
        return agentInfo._applyBlocking(node, batch, now=time.time())
    return agentInfo._applyBlocking(node, batch)


def saveNodes(nodes: Any) -> bool:
    if "now" in inspect.signature(nodes.save).parameters:
        return nodes.save(now=time.time())
    return nodes.save()


# ---------------------------------------------------------------------------
# 2-5. The cluster.


class Cluster(NodeCluster):
    """The master and the workers of the run, their logs, and what they cost."""

    def __init__(self, layout: Layout, period: float) -> None:
        super().__init__(layout, lambda *where: Node(*where, options(period)))
        self.logs = [AgentLog(w.log) for w in self.workers]
        self.masterLog = LogWatcher(self.master.log)
        self.masterFolder = layout.statusFolder(layout.masterHome)

    def workersCPU(self) -> float:
        return sum(w.cpu() for w in self.workers)

    def pollLogs(self) -> None:
        for watcher in (*self.logs, self.masterLog):
            watcher.poll()


def firstSync(cluster: Cluster, args: argparse.Namespace, results: Results,
              base: dict[str, float], pyspy: str | None) -> dict[str, Any]:
    layout, master = cluster.layout, cluster.master
    n, W = layout.agents, layout.workers
    results.section(f"2. First full sync: {n:,} agents on {W} worker processes -> the master")
    os.sync()
    master.start()
    master.waitListening()
    time.sleep(1.0)  # its first integrity scan done, the reactor idle
    idleRSS, idleHWM = master.rss(), master.hwm()
    results.add("master before the workers", f"listening {time.perf_counter() - master.startedAt:.1f} s after"
                f" its start; VmRSS {mb(idleRSS)}, VmHWM {mb(idleHWM)}")
    cpu0 = master.cpu()
    if pyspy:
        master.startSpy(pyspy, os.path.join(layout.top, "spy-first.txt"))
    t0 = time.perf_counter()
    for w in cluster.workers:
        w.start()
    shares = [len(layout.agentsOf(w)) for w in range(W)]
    deadline = time.monotonic() + FIRST_SYNC_TIMEOUT
    allOnMaster = None
    allLogged = None
    peakRSS = 0
    while time.monotonic() < deadline:
        cluster.check()
        cluster.pollLogs()
        peakRSS = max(peakRSS, master.rss() or 0)
        if allLogged is None and all(
            sum(int(m[1]) for _, m in log.sent(t0)) >= share for log, share in zip(cluster.logs, shares)
        ):
            allLogged = time.perf_counter() - t0
        # A worker logs 'Sent' once the master answered, i.e. wrote its statuses: the master's folder
        # (50,000 entries) is listed only then, not while the master creates files in it.
        if allLogged is not None and countStatuses(cluster.masterFolder) >= n:
            allOnMaster = time.perf_counter() - t0
            break
        time.sleep(0.1)
    else:
        dumpTails(cluster.nodes[:3])
        raise RuntimeError(f"first sync not done in {FIRST_SYNC_TIMEOUT:.0f} s: master has"
                           f" {countStatuses(cluster.masterFolder):,} of {n:,}")
    cpu = master.cpu() - cpu0
    done = allOnMaster
    master.stopSpy()
    hwm, rss = master.hwm(), master.rss()

    joined = [log.since(t0, JOINED) for log in cluster.logs]
    joinedAt = [j[0][0] - t0 for j in joined if j]
    sent = [log.sent(t0) for log in cluster.logs]
    firstSent = [s[0] for s in sent if s]
    logged = [sum(float(m[3]) for _, m in s) for s in sent]
    bytesSent = [sum(int(m[2] or 0) for _, m in s) for s in sent]
    count = sum(int(m[1]) for s in sent for _, m in s)
    taken = sum(int(m[4]) for s in sent for _, m in s)
    results.add("workers joined (their logs, bench's poll +-0.1 s)",
                f"{len(joinedAt)} of {W}, first {min(joinedAt, default=0):.1f} s, last {max(joinedAt, default=0):.1f} s"
                " after the workers' start")
    results.add("first 'Sent' line read, first / last worker",
                f"{min(at for at, _ in firstSent) - t0:.1f} s / {max(at for at, _ in firstSent) - t0:.1f} s"
                f" (sync_agent_info = {args.period:g} s after each worker's start)")
    results.add("all statuses on the master (every worker's 'Sent' read, then the master's folder counted)",
                f"**{allOnMaster:.1f} s** after the workers' start")
    results.add("workers' logged sync time (scan + send + master's answer)",
                f"max **{max(logged):.2f} s**, median {percentile(logged, 0.5):.2f} s"
                f" ({count:,} statuses sent, {taken:,} taken; ratio max / Wazuh's {WAZUH_ALLOWANCE:g} s:"
                f" {max(logged) / WAZUH_ALLOWANCE:.2f}x)")
    # From the first worker's first cycle (its 'Sent' line read, less the time it logged) to the last status.
    cycleStart = min(s[0][0] - t0 - float(s[0][1][3]) for s in sent if s)
    span = allOnMaster - cycleStart
    results.add("  first worker's cycle start -> all on the master", f"**{span:.1f} s**"
                f" ({n / span:,.0f} statuses/s)")
    results.add("  ratio / cp -a, / the master's apply step alone (wall, section 1)",
                f"**{span / base['cp']:.1f}x** ({base['cp']:.2f} s),"
                f" **{span / base['applyAllWall']:.1f}x** ({base['applyAllWall']:.2f} s)")
    results.add("master CPU, workers' start -> all synced",
                f"**{cpu:.2f} s** over {done:.1f} s of wall ({cpu / n * 1e6:.0f} us/status; joins and"
                " integrity checks of the workers included)")
    results.add("  ratio master CPU / its apply step alone (section 1)",
                f"**{cpu / max(base['applyAllCPU'], 1e-9):.1f}x** ({base['applyAllCPU']:.2f} s)")
    if any(bytesSent):
        results.add("bytes sent (workers' logs, compressed bundles)",
                    f"{fmtBytes(sum(bytesSent))} ({sum(bytesSent) / max(count, 1):.0f} B/status;"
                    f" {fmtBytes(statistics.median(bytesSent))} median per worker)")
    else:
        results.note("the workers' 'Sent' lines carry no byte count")
    wire = wireBytesReceived(cluster.port)
    if wire is not None:
        results.add("bytes the master received on its connections (ss, TLS payload, since each joined)",
                    fmtBytes(wire))
    results.add("master RSS after", f"VmRSS **{mb(rss)}**, VmHWM **{mb(hwm)}** (before the workers:"
                f" {mb(idleRSS)}; max polled {mb(peakRSS)})")
    workersHWM = [w.hwm() or 0 for w in cluster.workers]
    results.add("workers' VmHWM", f"max {mb(max(workersHWM))}, median {mb(int(statistics.median(workersHWM)))}")
    verifyMaster(cluster, results)
    return {"cpu": cpu, "wall": allOnMaster, "logged": max(logged), "bytes": sum(bytesSent)}


def verifyMaster(cluster: Cluster, results: Results, sample: int = 2000) -> None:
    """Every status on the master, a sample compared byte for byte, every agent's node as recorded."""
    layout = cluster.layout
    count = countStatuses(cluster.masterFolder)
    rng = random.Random(9)
    bad = []
    for i in rng.sample(range(1, layout.agents + 1), min(sample, layout.agents)):
        mine = os.path.join(cluster.masterFolder, statusName(i))
        theirs = os.path.join(layout.statusFolder(layout.workerHomes[layout.workerOf(i)]), statusName(i))
        try:
            a, b = os.stat(mine), os.stat(theirs)
            with open(mine, "rb") as f1, open(theirs, "rb") as f2:
                same = f1.read() == f2.read()
        except OSError as e:
            bad.append(f"{statusName(i)}: {e}")
            continue
        if not same or abs(a.st_mtime_ns - b.st_mtime_ns) >= 1000:
            bad.append(statusName(i))
    wrongNode = 0
    try:
        with open(os.path.join(layout.masterHome, "queue", "cluster", "agent-nodes.json")) as f:
            recorded = json.load(f)["agents"]
        for i in range(1, layout.agents + 1):
            entry = recorded.get(statusName(i))
            if entry is None or entry[0] != layout.workerNames[layout.workerOf(i)]:
                wrongNode += 1
    except (OSError, ValueError, KeyError) as e:
        results.note(f"agent-nodes.json unreadable: {e}")
        wrongNode = -1
    results.add("master's copies (count; sample of "
                f"{min(sample, layout.agents):,} vs the workers': content, mtime to 1 us; node recorded)",
                f"{count:,} of {layout.agents:,}; {len(bad)} differ; {wrongNode} agents with a wrong or no node")
    if bad:
        results.note(f"statuses differing on the master, e.g. {bad[:3]}")


def idleWindows(cluster: Cluster, window: float, count: int, results: Results) -> dict[str, float]:
    results.section(f"3. Idle: nothing changes ({count} windows of {window:g} s)")
    cpus, wires, workerCPUs, sentLines = [], [], [], 0
    for _ in range(count):
        cluster.pollLogs()
        t0 = time.perf_counter()
        cpu0, wire0, workers0 = cluster.master.cpu(), wireBytesReceived(cluster.port), cluster.workersCPU()
        while time.perf_counter() - t0 < window:
            cluster.check()
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        cpus.append((cluster.master.cpu() - cpu0) / elapsed)
        workerCPUs.append((cluster.workersCPU() - workers0) / elapsed)
        wire1 = wireBytesReceived(cluster.port)
        if wire0 is not None and wire1 is not None:
            wires.append((wire1 - wire0) / elapsed)
        cluster.pollLogs()
        sentLines += sum(len(log.sent(t0)) for log in cluster.logs)
    rate = statistics.median(cpus)
    results.add("master CPU per window", f"{rate * window:.3f} s ({rate * 100:.1f}% of a core; runs"
                f" {', '.join(f'{c * window:.3f}' for c in cpus)} s)")
    workerRate = statistics.median(workerCPUs)
    results.add(f"all {cluster.layout.workers} workers' CPU per window",
                f"{workerRate * window:.3f} s ({workerRate * window / cluster.layout.workers * 1000:.0f} ms per worker:"
                f" listing their {cluster.layout.agents // cluster.layout.workers:,} statuses every"
                f" {window / 2:g} s, integrity, keep-alives)")
    if wires:
        results.add("bytes the master received per window (ss)", fmtBytes(statistics.median(wires) * window))
    results.add("'Sent' lines meanwhile", f"{sentLines} (expected 0: nothing changed)")
    return {"cpuRate": rate, "workerRate": workerRate, "wireRate": statistics.median(wires) if wires else 0.0}


def steadyCycles(cluster: Cluster, args: argparse.Namespace, results: Results, base: dict[str, float],
                 idle: dict[str, float], window: float, pyspy: str | None) -> None:
    layout, master = cluster.layout, cluster.master
    W = layout.workers
    share = layout.changedPerWorker(args.change)
    total = sum(share)
    results.section(f"4. Steady state: {args.cycles} cycles, {total:,} agents ({args.change * 100:g}%)"
                    f" change each, windows of {window:g} s")
    rng = random.Random(10)
    rows = []
    if pyspy:
        master.startSpy(pyspy, os.path.join(layout.top, "spy-cycles.txt"))
    for c in range(args.cycles):
        # Out of step with the workers' cycles, which all started together.
        pause = time.perf_counter() + rng.uniform(0, args.period)
        while time.perf_counter() < pause:
            cluster.check()
            time.sleep(0.05)
        cluster.pollLogs()
        chosen = [rng.sample(list(layout.agentsOf(w)), share[w]) for w in range(W)]
        cpu0, wire0, workers0 = master.cpu(), wireBytesReceived(cluster.port), cluster.workersCPU()
        t0 = time.perf_counter()
        stamp = time.time_ns()
        for w, agents in enumerate(chosen):
            folder = layout.statusFolder(layout.workerHomes[w])
            for i in agents:
                layout.mtimes[i] = stamp
                writeStatus(folder, i, stamp)
        touched = time.perf_counter() - t0
        waiting = {i for agents in chosen for i in agents}
        landed = None
        logged: list[float | None] = [None] * W
        deadline = time.monotonic() + CYCLE_TIMEOUT
        while time.monotonic() < deadline:
            cluster.check()
            if waiting:
                for i in list(waiting):
                    try:
                        if os.stat(os.path.join(cluster.masterFolder, statusName(i))).st_mtime_ns >= stamp - 1000:
                            waiting.discard(i)
                    except FileNotFoundError:
                        pass
                if not waiting:
                    landed = time.perf_counter() - t0
            for w, log in enumerate(cluster.logs):
                if logged[w] is None:
                    log.poll()
                    if sum(int(m[1]) for _, m in log.sent(t0)) >= share[w]:
                        logged[w] = time.perf_counter() - t0
            if landed is not None and all(x is not None for x in logged):
                break
            time.sleep(0.05)
        else:
            dumpTails(cluster.nodes[:3])
            raise RuntimeError(f"cycle {c}: {len(waiting)} of {total} statuses not on the master,"
                               f" {sum(x is None for x in logged)} workers silent after {CYCLE_TIMEOUT:.0f} s")
        # The rest of the window: the same length every cycle, so that idle costs compare.
        while time.perf_counter() - t0 < window:
            cluster.check()
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu = master.cpu() - cpu0
        wire1 = wireBytesReceived(cluster.port)
        cluster.pollLogs()
        sent = [log.sent(t0) for log in cluster.logs]
        rows.append({
            "cpu": cpu,
            "workers": cluster.workersCPU() - workers0,
            "extra": cpu - idle["cpuRate"] * elapsed,
            "e2e": landed,
            "logged": max(sum(float(m[3]) for _, m in s) for s in sent),
            "bytes": sum(int(m[2] or 0) for s in sent for _, m in s),
            "count": sum(int(m[1]) for s in sent for _, m in s),
            "lines": sum(len(s) for s in sent),
            "wire": (wire1 - wire0) if wire0 is not None and wire1 is not None else None,
            "rss": master.rss(),
            "touched": touched,
            "elapsed": elapsed,
        })
        r = rows[-1]
        print(f"  cycle {c + 1}: master CPU {r['cpu']:.3f} s ({r['extra']:+.3f} s over idle),"
              f" all on master {r['e2e']:.2f} s after the touch, workers' max logged {r['logged']:.3f} s,"
              f" {r['count']} sent in {r['lines']} lines, {fmtBytes(r['bytes'])}, VmRSS {mb(r['rss'])}",
              flush=True)
    master.stopSpy()
    cpus, extras = [r["cpu"] for r in rows], [r["extra"] for r in rows]
    results.add("master CPU per cycle window (s)", f"**{stats(cpus, digits=3)}**"
                f"  [{', '.join(f'{v:.3f}' for v in cpus)}]")
    results.add("  above idle (window's idle CPU subtracted)", f"{stats(extras, digits=3)} s;"
                f" {statistics.median(extras) / total * 1e6:.0f} us/status")
    results.add("  ratio cycle / idle window",
                f"{statistics.median(cpus) / max(idle['cpuRate'] * window, 1e-9):.1f}x"
                f" ({idle['cpuRate'] * window:.3f} s idle)")
    results.add("  ratio above idle / the apply step alone (section 1)",
                f"**{statistics.median(extras) / max(base['applyCycleCPU'], 1e-9):.1f}x**"
                f" ({base['applyCycleCPU'] * 1000:.0f} ms)")
    workerCPU = [r["workers"] for r in rows]
    results.add(f"all {W} workers' CPU per cycle window (s)",
                f"{stats(workerCPU, digits=3)} (idle window: {idle['workerRate'] * window:.3f} s)")
    results.add("workers' logged sync time, max over workers (s)",
                f"**{stats([r['logged'] for r in rows], digits=3)}**; vs Wazuh's {WAZUH_ALLOWANCE:g} s:"
                f" {max(r['logged'] for r in rows) / WAZUH_ALLOWANCE:.3f}x at worst")
    results.add("touch -> all new statuses on the master (s)",
                f"{stats([r['e2e'] for r in rows])} (includes waiting for each worker's next"
                f" {args.period:g} s cycle; touching took {max(r['touched'] for r in rows) * 1000:.0f} ms)")
    results.add("statuses sent per cycle (workers' logs)",
                f"{', '.join(str(r['count']) for r in rows)} (expected {total} each; in"
                f" {', '.join(str(r['lines']) for r in rows)} 'Sent' lines)")
    results.add("bytes sent per cycle (compressed bundles)", f"{stats([r['bytes'] for r in rows], 1 / 1024, 1)} KB;"
                f" {statistics.median(r['bytes'] for r in rows) / total:.0f} B/status")
    wires = [r["wire"] for r in rows if r["wire"] is not None]
    if wires:
        results.add("bytes the master received per window (ss)",
                    f"{stats(wires, 1 / 1024, 1)} KB (idle window: {idle['wireRate'] * window / 1024:.1f} KB)")
    results.add("master RSS after each cycle", ", ".join(mb(r["rss"]) for r in rows) + f"; VmHWM {mb(master.hwm())}")


def controlTimings(cluster: Cluster, results: Results, pyspy: str | None) -> None:
    layout, master = cluster.layout, cluster.master
    n = layout.agents
    results.section(f"5. cluster_control over {n:,} agents")

    def control(node: Node, *arguments: str) -> tuple[float, float, float, list[str]]:
        spying = pyspy is not None and node is master and arguments == ("-a",)
        if spying:
            master.startSpy(pyspy, os.path.join(layout.top, "spy-control.txt"))
            time.sleep(0.5)  # py-spy attached
        cpu0, worker0, client0 = master.cpu(), cluster.workers[0].cpu(), childrenCPU()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "wazuhcluster.control", "--home", node.home, *arguments],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        took = time.perf_counter() - started
        clientCPU[0] = childrenCPU() - client0
        if spying:
            master.stopSpy()
        if done.returncode != 0:
            raise RuntimeError(f"cluster_control {' '.join(arguments)} on {node.name}: {done.stderr or done.stdout}")
        return took, master.cpu() - cpu0, cluster.workers[0].cpu() - worker0, done.stdout.splitlines()

    clientCPU = [0.0]
    base, baseCPU, _, lines = control(master, "-l")
    results.add("baseline: -l on the master (process start + one round trip)",
                f"{base:.2f} s ({len(lines)} lines; master CPU {baseCPU:.2f} s, cluster_control's {clientCPU[0]:.2f} s)")
    for label, node, arguments, expected in (
        ("-a on the master", master, ["-a"], f"Listing {n + 1} agent(s)."),
        ("-a -fs Active on the master", master, ["-a", "-fs", "Active"],
         f"Found {n + 1} agent(s) with status 'Active'."),
        (f"-a through {cluster.workers[0].name}", cluster.workers[0], ["-a"], f"Listing {n + 1} agent(s)."),
    ):
        took, cpu, workerCPU, lines = control(node, *arguments)
        check = "OK" if lines and lines[-1] == expected else f"last line {lines[-1] if lines else ''!r}, expected {expected!r}"
        extra = f", that worker's {workerCPU:.2f} s" if node is not master else ""
        results.add(label, f"**{took:.2f} s** ({took / base:.1f}x -l); CPU: master {cpu:.2f} s{extra},"
                    f" cluster_control's {clientCPU[0]:.2f} s; {check}")
    took, _, _, lines = control(master, "-i", "more")
    active = {}
    current = None
    for line in lines:
        m = re.match(r"    (\S+) \(", line)
        if m:
            current = m[1]
        m = re.match(r"\s+Active agents: (\d+)", line)
        if m and current:
            active[current] = int(m[1])
    onWorkers = sum(active.get(name, 0) for name in layout.workerNames)
    results.add("-i more on the master: active agents on the workers",
                f"{onWorkers:,} of {n:,} ({took:.2f} s)" + ("" if onWorkers == n else "  (expected all)"))


# ---------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    exitOnTerminate()
    results = Results()
    top = tempfile.mkdtemp(prefix="wazuhcluster-bench-agents-", dir=args.tmp)
    started = time.perf_counter()
    pyspy = findPySpy() if args.profile else None
    if args.profile and pyspy is None:
        print("NOTE: --profile needs py-spy (pip install py-spy); running without it", flush=True)
    cluster = None
    try:
        machine(results, top)
        layout = Layout(top, args.agents, args.workers)
        results.section("Setup")
        t = time.perf_counter()
        layout.writeKeys()
        for home in (layout.masterHome, *layout.workerHomes):
            layout.putKeys(home)
        layout.writeStatuses()
        results.add("trees", f"client.keys of {args.agents:,} lines ({fmtBytes(len(layout.keys))}) on"
                    f" {args.workers + 1} nodes, {args.agents:,} status files on {args.workers} workers"
                    f" ({args.agents // args.workers:,} each), written in {time.perf_counter() - t:.1f} s")
        results.add("internal options", ", ".join(f"{k}={v:g}" for k, v in options(args.period).items()))
        base = baselines(layout, args, results)
        cluster = Cluster(layout, args.period)
        try:
            firstSync(cluster, args, results, base, pyspy)
            time.sleep(2 * args.period)  # nothing in flight
            window = 2 * args.period
            idle = idleWindows(cluster, window, 2, results)
            steadyCycles(cluster, args, results, base, idle, window, pyspy)
            controlTimings(cluster, results, pyspy)
            cluster.pollLogs()
            for node, watcher in ((cluster.master, cluster.masterLog), *zip(cluster.workers, cluster.logs)):
                for at, line in watcher.since(0.0, PROBLEMS)[:3]:
                    results.note(f"{node.name} log: {line[20:200]}")
        except BaseException:
            dumpTails(cluster.nodes[:3])
            raise
        finally:
            cluster.stop()
        if pyspy:
            printSpy(os.path.join(top, "spy-first.txt"), "py-spy of the master, workers' start -> all synced",
                     top=25, idle=SPY_IDLE_POOL, functions=True)
            printSpy(os.path.join(top, "spy-cycles.txt"), "py-spy of the master, every steady cycle",
                     top=25, idle=SPY_IDLE_POOL, functions=True)
            printSpy(os.path.join(top, "spy-control.txt"), "py-spy of the master, cluster_control -a on it",
                     top=25, idle=SPY_IDLE_POOL, functions=True)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(top, ignore_errors=True)
    results.section("Whole run")
    results.add("wall time of the bench", f"{time.perf_counter() - started:.0f} s")
    if args.profile and pyspy:
        results.note("--profile: py-spy sampled the master during 2, 4 and the first -a of 5; their timings"
                     " are inflated")
    print("\n\nSUMMARY (wazuhcluster bench/agents.py)")
    print(results.table())
    for note in results.notes:
        print(f"NOTE: {note}")


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50_000, help="registered agents, each with a status")
    parser.add_argument("--workers", type=int, default=10, help="worker processes")
    parser.add_argument("--cycles", type=int, default=5, help="steady cycles measured")
    parser.add_argument("--change", type=float, default=0.01, help="fraction of the agents changing each cycle")
    parser.add_argument("--period", type=float, default=2.0, help="sync_agent_info of the workers, in seconds")
    parser.add_argument("--tmp", default=None, help="where the temporary trees go (default: $TMPDIR)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy of the master during the first sync and the steady cycles (inflates both)")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 99_999:
        parser.error("--agents from 1 to 99999 (agent IDs have 5 digits)")
    if not 1 <= args.workers <= 30:
        parser.error("--workers from 1 to 30")
    if args.agents < args.workers:
        parser.error("--agents must be at least --workers")
    if not 1 <= args.cycles <= 50:
        parser.error("--cycles from 1 to 50")
    if not 0 < args.change <= 1:
        parser.error("--change more than 0, at most 1")
    if not 0.5 <= args.period <= 30:
        parser.error("--period from 0.5 to 30 seconds")
    return args


if __name__ == "__main__":
    main(parseArguments())
