#!/usr/bin/env python
"""
Scale benchmark of the cluster daemon, as Wazuh's own performance suite
measures a cluster: one master, 10 and then 25 workers, 50,000 agents.

    python bench/scale.py [--workers 10,25] [--agents 50000] [--tmp /dev/shm]
                          [--stable-minutes 3] [--change 0.01] [--period S]
                          [--soak MINUTES [--soak-slope 10]] [--profile]
                          [--keep-logs DIR]

The nodes' periods are Wazuh's defaults (sync_integrity 9 s,
recalculate_integrity 8 s, sync_agent_info 10 s), which its suite runs
with; C{--period S} shortens all three (the output then says so).

For each worker count, a fresh cluster of real C{twistd -n wazuhcluster}
processes on 127.0.0.1, each node in its own temporary home:

 - the master holds the real Wazuh ruleset (rules, decoders, lists under
   its C{etc/}), a C{--agents}-line C{etc/client.keys} and as many
   C{queue/agent-groups/} files; it has no agent status yet;
 - each worker starts fresh (nothing synchronised) with the status files of
   the agents that report to it (agent i on worker i % W).

Setup phase: the workers start at once and receive everything (integrity),
while they send every status (agent-info); it ends when every worker says
its files are in sync with the master's and the master holds every status.
Stable phase: C{--stable-minutes}, in which C{--change} of the agents (1%)
get a new keep-alive every period, spread over the workers; nothing else
changes.

For each phase: the time of each task (integrity check, integrity sync,
agent-info sync) on the master and on the workers, mean and max, next to
the thresholds of Wazuh's performance suite for the same sizes and to the
project's aim (a tenth of Wazuh's times, the master under 100 MB); the CPU
(% of one core), memory (USS from /proc/PID/smaps_rollup, and RSS) and open
files (/proc/PID/fd) of the master and the workers, sampled every second.

The task times come from the nodes themselves: each node runs under a small
wrapper (C{scale.py --_node}) that times the daemon's own task methods and
writes one JSON line per task to C{HOME/bench-tasks.jsonl} (the daemon does
not log a duration for these tasks); the master's own integrity computation
comes from its debug line "Integrity computed: ... in T s" in
C{logs/cluster.log}, and the workers' "Files in sync with the master" debug
lines end the setup phase.  Nodes run with C{--debug}.  The wrapper also
records how late each node's reactor runs.  Before each cluster starts, the
bench measures in its own process what one integrity check costs the master
(decoding a worker's manifest, its memory, the comparison).

C{--soak MINUTES} (off by default, at most 60) goes on with the stable phase
of the last worker count for that long, takes the mean of the master's
one-second USS samples over every minute, and exits with status 1 if it
keeps growing: the least-squares slope of those means over the second half
of the soak is above C{--soak-slope} MB/hour *and* the last is above the
largest of the first half by more than 1 MB.

Every wait is bounded in time; every process started is stopped and the
temporary trees removed, whatever happens.  Nothing here changes the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from figures import Results  # bench/figures.py
from processes import (  # bench/processes.py
    MASTER_NAME, SPY_IDLE_POOL, LogWatcher, Node, NodeCluster, dropTree, dumpTails, exitOnTerminate,
    findPySpy, machine, mb, printSpy,
)
from trees import (  # bench/trees.py
    AgentLayout, agentIP, agentName, countStatuses, rulesetProblem, statusName, writeRuleset, writeStatus,
)

#: Thresholds of Wazuh's performance suite for 50,000 agents (wazuh/wazuh-qa,
#: tests/performance/test_cluster/test_cluster_performance/data/{10w,25w}_50000a_thresholds.yaml):
#: task -> side -> (mean, max) seconds, per phase; and the resources of wazuh-clusterd.
WAZUH_TASKS = {
    10: {
        "setup": {
            "integrity_check": {"master": (3.0, 16.0), "worker": (7.5, 26.0)},
            "integrity_sync": {"master": (3.6, 20.2), "worker": (1.5, 10.0)},
            "agent_info_sync": {"master": (1.5, 8.5), "worker": (4.0, 21.0)},
        },
        "stable": {
            "integrity_check": {"master": (2.5, 4.5), "worker": (6.7, 9.0)},
            "agent_info_sync": {"master": (1.4, 3.0), "worker": (4.1, 5.1)},
        },
    },
    25: {
        "setup": {
            "integrity_check": {"master": (8.3, 50.0), "worker": (13.5, 55.0)},
            "integrity_sync": {"master": (11.0, 54.0), "worker": (3.2, 22.0)},
            "agent_info_sync": {"master": (3.1, 31.0), "worker": (8.0, 50.0)},
        },
        "stable": {
            "integrity_check": {"master": (3.0, 6.5), "worker": (6.0, 10.0)},
            "agent_info_sync": {"master": (1.0, 5.0), "worker": (3.3, 8.5)},
        },
    },
}
#: side -> phase -> figure -> (mean, max): CPU in % of one core, open files, USS in MB.
WAZUH_RESOURCES = {
    10: {
        "setup": {"master": {"cpu": (53.1, 132), "fd": (110.7, 128.7), "uss": (165, 308)},
                  "worker": {"cpu": (12.2, 60), "fd": (66, 79.2), "uss": (114, 204)}},
        "stable": {"master": {"cpu": (51.0, 100), "fd": (98, 116), "uss": (193, 322)},
                   "worker": {"cpu": (14.0, 38.3), "fd": (70, 70.4), "uss": (142, 197)}},
    },
    25: {
        "setup": {"master": {"cpu": (79.4, 200.1), "fd": (103.4, 160), "uss": (212, 1045)},
                  "worker": {"cpu": (9.4, 47.9), "fd": (70, 72.6), "uss": (114, 204)}},
        "stable": {"master": {"cpu": (53, 110), "fd": (59, 70.5), "uss": (151, 293)},
                   "worker": {"cpu": (14, 40), "fd": (72, 72.6), "uss": (154, 228)}},
    },
}
#: The project's aim: a tenth of Wazuh's times, the master under 100 MB.
AIM_TIME_FRACTION = 0.1
AIM_MASTER_MB = 100

TASKS = ("integrity_check", "integrity_sync", "agent_info_sync")
TASK_NAMES = {"integrity_check": "integrity check", "integrity_sync": "integrity sync",
              "agent_info_sync": "agent-info sync"}

#: Hard bounds, whatever the arguments say.
FIRST_SCAN_TIMEOUT = 300.0
SETUP_TIMEOUT = 1800.0
SETTLE_TIMEOUT = 120.0
SAMPLE_EVERY = 1.0

#: The nodes' reactor lateness: how often it is checked, and from what lateness a second is recorded.
LAG_INTERVAL = 0.1
LAG_RECORDED = 0.05

#: How far above the first half's largest sample the last must be to count as growth (MB).
SOAK_MARGIN_MB = 1.0

COMPUTED = re.compile(r"Integrity computed: (\d+) files, (\d+) hashed, (\d+) unchanged, in ([0-9.]+) s")
IN_SYNC = re.compile(r"Files in sync with the master \((\d+) files")
SENT = re.compile(r"Sent (\d+) agent statuses")
PROBLEMS = re.compile(r"WARNING|ERROR|CRITICAL|Traceback")
STAMP = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ")


def lineTime(line: str) -> float | None:
    """When a cluster.log line was written (epoch seconds, to the second), or None."""
    m = STAMP.match(line)
    return time.mktime(time.strptime(m[1], "%Y/%m/%d %H:%M:%S")) if m else None


#: Wazuh's own periods (its defaults, which its performance suite runs with), in seconds.
WAZUH_PERIODS = {"sync_integrity": 9.0, "recalculate_integrity": 8.0, "sync_agent_info": 10.0}


def periods(args: argparse.Namespace) -> dict[str, float]:
    """The periods of the run: Wazuh's, or C{--period} for all three, or each as given."""
    chosen = {name: (args.period or WAZUH_PERIODS[name]) for name in WAZUH_PERIODS}
    for name in WAZUH_PERIODS:
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    return chosen


def options(periods: dict[str, float]) -> dict[str, float]:
    """The internal options of every node: the periods of the run, nothing dropped for silence."""
    return {
        **periods,
        "connection_retry": 1,
        "keep_alive": 10,
        "check_worker_lastkeepalive": 600,
        "max_allowed_time_without_keepalive": 1200,
        "handshake_timeout": 60,
    }


# ---------------------------------------------------------------------------
# In each node's process: time the daemon's tasks.


def nodeWrapper(argv: list[str]) -> None:
    """C{scale.py --_node TASKS NAME TWISTD-ARGS...}: twistd in this process, its tasks timed into TASKS."""
    installTaskTimers(argv[0], argv[1])
    from twisted.scripts.twistd import run as twistdRun

    sys.argv = ["twistd", *argv[2:]]
    twistdRun()


def installTaskTimers(path: str, nodeName: str) -> None:
    """
    Wrap the daemon's task methods (at class level, before any is built) so
    that each task writes C{{"task", "side", "node", "start", "seconds", "ok",
    "n"}} as a line of C{path}.  All of them run on the reactor thread.

     - master, integrity check: from a worker's manifest stream opening
       (L{_ManifestSink}) to the answer (received, decoded, compared);
       answers "busy" are not tasks;
     - master, integrity sync: L{MasterIntegrity._transfer}, the files sent;
     - master, agent-info sync: from a worker's status stream opening
       (L{_StatusSink}) to the statuses applied;
     - worker, integrity check: L{WorkerIntegrity.sync} until the master's
       answer (its scan, the manifest sent, the comparison);
     - worker, integrity sync: the wait for the master's files, received and
       put in place (L{WorkerIntegrity._waitForBundle});
     - worker, agent-info sync: L{WorkerAgentInfo.sync} when it sent statuses;
     - and "lag": each second in which the reactor ran a 0.1 s LoopingCall
       at least 50 ms late, with the worst lateness of that second.
    """
    from wazuhcluster.master import agentinfo as masteragentinfo, integrity as masterintegrity
    from wazuhcluster.worker import agentinfo as workeragentinfo, integrity as workerintegrity

    out = open(path, "a", buffering=1)

    def record(task: str, side: str, node: str, start: tuple[float, float], ok: bool = True,
               n: int | None = None, seconds: float | None = None) -> None:
        took = time.monotonic() - start[1] if seconds is None else seconds
        out.write(json.dumps({"task": task, "side": side, "node": node, "start": start[0],
                              "seconds": round(took, 6), "ok": ok, "n": n}) + "\n")

    def now() -> tuple[float, float]:
        return time.time(), time.monotonic()

    def timedSink(sinkClass: Any, task: str, node: Any, count: Any, skip: Any = lambda answer: False,
                  good: Any = lambda n: True) -> None:
        init, close = sinkClass.__init__, sinkClass.close

        def initTimed(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self._benchStart = now()

        def closeTimed(self: Any) -> Any:
            def done(answer: Any) -> Any:
                if not skip(answer):
                    n = count(self, answer)
                    record(task, "master", node(self), self._benchStart, good(n), n)
                return answer

            def failed(failure: Any) -> Any:
                record(task, "master", node(self), self._benchStart, False)
                return failure

            return close(self).addCallbacks(done, failed)

        sinkClass.__init__, sinkClass.close = initTimed, closeTimed

    def answerOf(answer: Any) -> dict:
        try:
            parsed = json.loads(answer)
        except (TypeError, ValueError):
            return {}
        return parsed if isinstance(parsed, dict) else {}

    # A check is the digest compared (in sync: the whole check), and when
    # it differs the manifest of the buckets that differ, compared.
    timedSink(masterintegrity._CheckSink, "integrity_check", lambda s: s.connection.nodeName,
              lambda s, a: None,
              skip=lambda a: bool(answerOf(a).get("busy")))
    timedSink(masterintegrity._ManifestSink, "integrity_check", lambda s: s.connection.nodeName,
              lambda s, a: None,
              skip=lambda a: bool(answerOf(a).get("busy")))
    # A stream the worker gave up (its timeout) is closed with its statuses dropped: not a success.
    timedSink(masteragentinfo._StatusSink, "agent_info_sync", lambda s: s.node,
              lambda s, a: len(s.inbox.statuses), good=lambda n: n > 0)

    transfer = masterintegrity.MasterIntegrity._transfer

    async def transferTimed(self: Any, connection: Any, status: Any, comparison: Any, *rest: Any) -> None:
        start = now()
        try:
            await transfer(self, connection, status, comparison, *rest)
        finally:
            record("integrity_sync", "master", connection.nodeName, start, not status.last_error,
                   len(comparison.missing) + len(comparison.shared))

    masterintegrity.MasterIntegrity._transfer = transferTimed

    workerSync, waitForBundle = workerintegrity.WorkerIntegrity.sync, workerintegrity.WorkerIntegrity._waitForBundle

    async def workerSyncTimed(self: Any) -> None:
        if self.connectionToMaster() is None or self.syncing:
            return await workerSync(self)
        start, errors = now(), self.stats["errors"]
        self._benchWait = None
        await workerSync(self)
        total = time.monotonic() - start[1]
        ok = self.stats["errors"] == errors
        wait = self._benchWait
        record("integrity_check", "worker", nodeName, start, ok, seconds=total - (wait[1] if wait else 0.0))
        if wait is not None:
            record("integrity_sync", "worker", nodeName, (wait[0], 0.0), ok and wait[2], seconds=wait[1])

    async def waitForBundleTimed(self: Any, connection: Any) -> None:
        start, ok = now(), False
        try:
            await waitForBundle(self, connection)
            ok = True
        finally:
            self._benchWait = (start[0], time.monotonic() - start[1], ok)

    workerintegrity.WorkerIntegrity.sync = workerSyncTimed
    workerintegrity.WorkerIntegrity._waitForBundle = waitForBundleTimed

    agentInfoSync = workeragentinfo.WorkerAgentInfo.sync

    async def agentInfoSyncTimed(self: Any) -> int:
        start = now()
        sent = await agentInfoSync(self)
        if sent:
            record("agent_info_sync", "worker", nodeName, start, True, sent)
        return sent

    workeragentinfo.WorkerAgentInfo.sync = agentInfoSyncTimed

    # The reactor's lateness: a LoopingCall every LAG_INTERVAL; each second in
    # which a tick ran at least LAG_RECORDED late is one line ("lag", its worst).
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    lag = {"expected": 0.0, "worst": 0.0, "window": time.time()}

    def tick() -> None:
        now = time.monotonic()
        if lag["expected"]:
            lag["worst"] = max(lag["worst"], now - lag["expected"])
        lag["expected"] = now + LAG_INTERVAL
        if time.time() - lag["window"] >= 1.0:
            if lag["worst"] >= LAG_RECORDED:
                record("lag", "master" if nodeName == MASTER_NAME else "worker", nodeName,
                       (lag["window"], 0.0), seconds=lag["worst"])
            lag["worst"], lag["window"] = 0.0, time.time()

    reactor.callWhenRunning(LoopingCall(tick).start, LAG_INTERVAL, False)


class ScaleNode(Node):
    """A node run under L{nodeWrapper}, with C{--debug}; its tasks in C{HOME/bench-tasks.jsonl}."""

    def __init__(self, home: str, name: str, nodeType: str, key: str, port: int, periods: dict[str, float]) -> None:
        super().__init__(home, name, nodeType, key, port, options(periods), debug=True)
        self.tasksPath = os.path.join(home, "bench-tasks.jsonl")
        # The watcher's times are epoch seconds, as the tasks' and the samples' are.
        self.watcher = LogWatcher(self.log, t0=time.perf_counter() - time.time())
        self._tasksOffset = 0
        self.tasks: list[dict[str, Any]] = []

    def command(self) -> list[str]:
        return [sys.executable, os.path.abspath(__file__), "--_node", self.tasksPath, self.name,
                *self.twistdArguments()]

    def readTasks(self) -> list[dict[str, Any]]:
        """Every task the node recorded so far."""
        try:
            with open(self.tasksPath) as f:
                f.seek(self._tasksOffset)
                data = f.read()
        except OSError:
            return self.tasks
        whole = data[: data.rfind("\n") + 1]
        self._tasksOffset += len(whole.encode())
        self.tasks.extend(json.loads(line) for line in whole.splitlines() if line)
        return self.tasks


# ---------------------------------------------------------------------------
# The trees.


class Layout(AgentLayout):
    """The homes of one run, and where every agent lives."""

    def write(self, seed: int = 11) -> dict[str, Any]:
        """The master's tree (ruleset, client.keys, agent groups) and each worker's statuses."""
        rng = random.Random(seed)
        started = time.perf_counter()
        etc = writeRuleset(self.masterHome)
        with open(os.path.join(self.masterHome, "etc", "client.keys"), "w") as f:
            f.writelines(f"{i:05d} {agentName(i)} {agentIP(i)} {rng.randbytes(32).hex()}\n"
                         for i in range(1, self.agents + 1))
        os.chmod(os.path.join(self.masterHome, "etc", "client.keys"), 0o640)
        groups = os.path.join(self.masterHome, "queue", "agent-groups")
        os.makedirs(groups)
        for i in range(1, self.agents + 1):
            with open(os.path.join(groups, f"{i:05d}"), "w") as f:
                f.write("default\n")
        now = time.time_ns()
        for w, home in enumerate(self.workerHomes):
            folder = self.statusFolder(home)
            os.makedirs(folder)
            for i in self.agentsOf(w):
                writeStatus(folder, i, now - rng.randrange(5 * 10**9, 60 * 10**9))
        # Older than the scanners' racy window, as a real tree is.
        old = time.time() - 3600
        for folder, _, names in os.walk(self.masterHome):
            for name in names:
                os.utime(os.path.join(folder, name), (old, old))
        return {"ruleset": etc, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------
# Resources, sampled every second.


def machineCPU() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat; iowait counted idle)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / ticks, total / ticks


class Sampler:
    """Per node: (time, CPU s, USS kB, RSS kB, open files), one row a second; and the machine's CPU."""

    def __init__(self, nodes: list[ScaleNode]) -> None:
        self.nodes = nodes
        self.rows: dict[str, list[tuple[float, float, int | None, int | None, int | None]]] = {
            n.name: [] for n in nodes}
        self.machine: list[tuple[float, float, float]] = []
        self.last = 0.0

    def sample(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < SAMPLE_EVERY:
            return
        self.last = now
        for node in self.nodes:
            if node.alive():
                self.rows[node.name].append((now, node.cpu(), node.uss(), node.rss(), node.openFiles()))
        busy, total = machineCPU()
        self.machine.append((now, busy, total))

    def window(self, name: str, t0: float, t1: float) -> dict[str, list[float]]:
        """CPU % of one core between consecutive samples, USS and RSS in MB, open files, within [t0, t1]."""
        rows = [r for r in self.rows[name] if t0 <= r[0] <= t1]
        cpu = [(b[1] - a[1]) / (b[0] - a[0]) * 100 for a, b in zip(rows, rows[1:]) if b[0] > a[0]]
        return {
            "cpu": cpu,
            "uss": [r[2] / 1024 for r in rows if r[2]],
            "rss": [r[3] / 1024 for r in rows if r[3]],
            "fd": [float(r[4]) for r in rows if r[4] is not None],
        }

    def machineShare(self, t0: float, t1: float) -> tuple[float, float] | None:
        """Cores busy on the whole machine over [t0, t1], and cores busy with our nodes."""
        rows = [r for r in self.machine if t0 <= r[0] <= t1]
        if len(rows) < 2:
            return None
        wall = rows[-1][0] - rows[0][0]
        busy = (rows[-1][1] - rows[0][1]) / wall
        ours = 0.0
        for node in self.nodes:
            mine = [r for r in self.rows[node.name] if t0 <= r[0] <= t1]
            if len(mine) > 1:
                ours += (mine[-1][1] - mine[0][1]) / wall
        return busy, ours


# ---------------------------------------------------------------------------
# One cluster.


class Cluster(NodeCluster):
    """The master and the workers of one run, and their samples."""

    def __init__(self, layout: Layout, periods: dict[str, float]) -> None:
        super().__init__(layout, lambda *where: ScaleNode(*where, periods))
        #: The agents change once per agent-info period.
        self.period = periods["sync_agent_info"]
        self.periods = periods
        self.sampler = Sampler(self.nodes)
        self.masterStatuses = layout.statusFolder(layout.masterHome)

    def tick(self) -> None:
        """Check that every node runs, and sample them if a second passed."""
        self.check()
        self.sampler.sample()

    def wait(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.tick()
            time.sleep(min(0.2, max(0.0, until - time.monotonic())))

    def tasks(self, t0: float, t1: float) -> list[dict[str, Any]]:
        """Every task, of every node, that started within [t0, t1]."""
        return [t for node in self.nodes for t in node.readTasks() if t0 <= t["start"] <= t1]

    def problems(self, since: float = float("-inf")) -> list[tuple[str, str]]:
        found = []
        for node in self.nodes:
            node.watcher.poll()
            found += [(node.name, line) for _, line in node.watcher.since(since, PROBLEMS)]
        return found


# ---------------------------------------------------------------------------
# Figures.


def meanMax(values: list[float]) -> tuple[float, float] | None:
    return (statistics.mean(values), max(values)) if values else None


def verdict(value: float, aim: float | None, wazuh: float | None) -> str:
    if aim is not None and value <= aim:
        return "within the aim"
    if wazuh is not None and value <= wazuh:
        return "within Wazuh's, over the aim"
    if wazuh is None and aim is None:
        return ""
    return "OVER Wazuh's" if wazuh is not None else "over the aim"


def reportTasks(results: Results, tasks: list[dict[str, Any]], phase: str, workers: int,
                summary: dict[str, Any], label: str | None = None) -> None:
    """Mean and max of each task's time, against Wazuh's thresholds for C{phase}; kept as C{label} (the phase)."""
    wazuh = WAZUH_TASKS.get(workers, {}).get(phase, {})
    key = label or phase
    for task in TASKS:
        for side in ("master", "worker"):
            done = [t for t in tasks if t["task"] == task and t["side"] == side]
            label = f"{TASK_NAMES[task]}, {'master' if side == 'master' else 'workers'} (s)"
            if not done:
                if task != "integrity_sync" or phase == "setup":
                    results.add(label, "no task in this phase")
                continue
            seconds = [t["seconds"] for t in done]
            failed = sum(not t["ok"] for t in done)
            mean, top = statistics.mean(seconds), max(seconds)
            summary[(key, task, side)] = (mean, top, len(done))
            text = f"mean **{mean:.3f}**, max **{top:.3f}** ({len(done)} tasks"
            text += f", {failed} failed)" if failed else ")"
            reference = wazuh.get(task, {}).get(side)
            if reference:
                aim = (reference[0] * AIM_TIME_FRACTION, reference[1] * AIM_TIME_FRACTION)
                text += (f"; Wazuh {reference[0]:g} / {reference[1]:g}, aim {aim[0]:.2f} / {aim[1]:.2f}:"
                         f" mean {verdict(mean, aim[0], reference[0])}, max {verdict(top, aim[1], reference[1])}")
            results.add(label, text)


def reportResources(results: Results, cluster: Cluster, t0: float, t1: float, phase: str,
                    summary: dict[str, Any], bench: float | None = None, label: str | None = None) -> None:
    sampler, W = cluster.sampler, len(cluster.workers)
    key = label or phase
    wazuh = WAZUH_RESOURCES.get(W, {}).get(phase, {})
    master = sampler.window(cluster.master.name, t0, t1)
    workers = [sampler.window(w.name, t0, t1) for w in cluster.workers]

    def both(values: list[float]) -> tuple[float, float] | None:
        return meanMax(values)

    for figure, unit, label in (("cpu", "%", "CPU, % of one core"), ("uss", "MB", "memory USS"),
                                ("rss", "MB", "memory RSS"), ("fd", "", "open files")):
        m = both(master[figure])
        # Workers: the mean of their means, the largest of their maxima.
        ws = [both(w[figure]) for w in workers]
        ws = [x for x in ws if x]
        wm = (statistics.mean(x[0] for x in ws), max(x[1] for x in ws)) if ws else None
        for side, value in (("master", m), ("worker", wm)):
            if value is None:
                continue
            summary[(key, figure, side)] = value
            text = f"mean **{value[0]:.1f}**, max **{value[1]:.1f}**{(' ' + unit) if unit else ''}"
            reference = wazuh.get(side, {}).get(figure)
            if reference:
                aim = AIM_MASTER_MB if (figure == "uss" and side == "master") else None
                text += (f"; Wazuh {reference[0]:g} / {reference[1]:g}{(' ' + unit) if unit else ''}"
                         + (f", aim under {aim} MB: max {verdict(value[1], aim, reference[1])}" if aim
                            else f": max {verdict(value[1], None, reference[1])}"))
            results.add(f"{label}, {'master' if side == 'master' else f'workers ({W})'}", text)
    share = sampler.machineShare(t0, t1)
    if share:
        busy, ours = share
        results.add("machine: cores busy, all / our nodes / everything else",
                    f"{busy:.2f} / {ours:.2f} / {max(busy - ours, 0):.2f} of {os.cpu_count()}"
                    + (f" (this bench's own process: {bench:.2f}, in 'everything else')" if bench is not None else ""))
        summary[(key, "machine")] = share


def reportLag(results: Results, tasks: list[dict[str, Any]]) -> None:
    """How late the nodes' reactors ran (a 0.1 s LoopingCall in each node): the worst, and the seconds over 1 s late."""
    for side in ("master", "worker"):
        late = [t["seconds"] for t in tasks if t["task"] == "lag" and t["side"] == side]
        worst = max(late, default=0.0)
        results.add(f"reactor lateness, {'master' if side == 'master' else 'workers'}",
                    f"worst **{worst:.2f} s**; {sum(v >= 1.0 for v in late)} seconds with a tick over 1 s late,"
                    f" {sum(v >= 0.1 for v in late)} over 0.1 s")


def reportLocalIntegrity(results: Results, cluster: Cluster, t0: float, t1: float) -> None:
    """The master's own integrity computation ("Integrity computed ... in T s", its debug log)."""
    watcher = cluster.master.watcher
    watcher.poll()
    # The log's own times are whole seconds.
    found = [COMPUTED.search(line) for _, line in watcher.all(COMPUTED)
             if int(t0) <= (lineTime(line) or 0) <= t1]
    if found:
        seconds = [float(m[4]) for m in found]
        results.add("master's own integrity computation (s, its log)",
                    f"mean {statistics.mean(seconds):.3f}, max {max(seconds):.3f} ({len(found)} rounds of"
                    f" {int(found[-1][1]):,} files, {sum(int(m[2]) for m in found):,} files hashed in all)")


def reportProblems(results: Results, cluster: Cluster, workers: int) -> None:
    """Warnings and errors of every node's log so far, grouped by their wording (names and numbers aside)."""
    groups: dict[str, list[str]] = {}
    for _, line in cluster.problems():
        text = line[20:] if lineTime(line) else line
        shape = re.sub(r"bench-worker-\d+", "W", text)
        shape = re.sub(r"\d+(\.\d+)?", "N", shape)
        groups.setdefault(shape, []).append(text)
    total = sum(len(v) for v in groups.values())
    results.add("warnings and errors in the nodes' logs (before they were stopped)",
                f"{total}" + (f" in {len(groups)} kinds (in the notes)" if groups else ""))
    for shape, lines in sorted(groups.items(), key=lambda x: -len(x[1]))[:6]:
        results.note(f"{workers} workers: {len(lines)} x {lines[0][:230]}")


# ---------------------------------------------------------------------------
# The phases.


def baseline(layout: Layout, results: Results) -> dict[str, float]:
    """
    The baseline for the master's check of an in-sync worker: what one
    check cost in the previous design (every worker's full manifest, every
    cycle), measured in this process on the master's own tree: a worker's
    scan (warm: nothing hashed) and its manifest encoded; the master's
    decoding of it (on its reactor thread, as the stream's pieces arrived),
    the memory the decoded manifest held, and the comparison (in a thread).
    Median CPU of 3, then one decode under tracemalloc.  The daemon's own
    check (a digest compared; a manifest only of the buckets that differ)
    is timed in the cluster that follows.
    """
    import tracemalloc

    from wazuhcluster.sync.compare import compare
    from wazuhcluster.sync.manifest import ManifestDecoder, encodeManifest
    from wazuhcluster.sync.scan import IntegrityScanner
    from wazuhcluster.sync.table import SyncTable

    table = SyncTable.load()
    scanner = IntegrityScanner(layout.masterHome, table)
    scanner.scan()  # cold: every file hashed once

    def cpu(body: Any) -> tuple[float, Any]:
        times, value = [], None
        for _ in range(3):
            started = time.process_time()
            value = body()
            times.append(time.process_time() - started)
        return statistics.median(times), value

    def decode(pieces: list[bytes]) -> Any:
        decoder = ManifestDecoder()
        for piece in pieces:
            decoder.feed(piece)
        return decoder.finish()

    scanCPU, scan = cpu(scanner.scan)
    encodeCPU, pieces = cpu(lambda: list(encodeManifest(scan.files)))
    decodeCPU, decoded = cpu(lambda: decode(pieces))
    compareCPU, comparison = cpu(lambda: compare(scan.files, decoded, table, scan.unstable))
    if not comparison.inSync:
        raise RuntimeError("the master's own manifest does not compare in sync with itself")
    decoded = comparison = None
    tracemalloc.start()
    kept = decode(pieces)
    held = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del kept
    files = len(scan.files)
    results.add("in this process, before the cluster: a worker's scan, warm (nothing hashed) / its manifest encoded",
                f"{scanCPU:.3f} / {encodeCPU:.3f} s CPU; {files:,} files, {sum(map(len, pieces)) / 2**20:.1f} MB of"
                f" JSON lines in {len(pieces)} pieces")
    results.add("the previous design's check, per worker and cycle: its full manifest decoded (on the reactor) /"
                " compared (in a thread)",
                f"**{decodeCPU:.3f}** / {compareCPU:.3f} s CPU; the decoded manifest holds **{held:.1f} MB**"
                f" (tracemalloc) until the comparison ends")
    results.add(f"  x {layout.workers} workers whose checks arrive together (previous design)",
                f"{layout.workers * decodeCPU:.1f} s of the master's reactor,"
                f" {layout.workers * held:.0f} MB held at once")
    return {"decode": decodeCPU, "compare": compareCPU, "held": held, "scan": scanCPU}


def startMaster(cluster: Cluster, results: Results) -> int:
    """Start the master; wait for its first integrity computation; how many files it synchronises."""
    master = cluster.master
    master.start()
    master.waitListening()
    deadline = time.monotonic() + FIRST_SCAN_TIMEOUT
    first = None
    while first is None and time.monotonic() < deadline:
        cluster.tick()
        master.watcher.poll()
        first = master.watcher.first(COMPUTED)
        time.sleep(0.1)
    if first is None:
        raise RuntimeError(f"the master's first integrity computation did not end in {FIRST_SCAN_TIMEOUT:.0f} s")
    m = COMPUTED.search(first[1])
    cluster.wait(2.0)
    cluster.sampler.sample(force=True)
    results.add("master before the workers",
                f"first integrity computation {first[0] - master.startedWall:.1f} s after its start"
                f" ({int(m[1]):,} files, {m[4]} s); USS {mb(master.uss())}, RSS {mb(master.rss())},"
                f" {master.openFiles()} open files")
    return int(m[1])


def setupPhase(cluster: Cluster, files: int, results: Results, summary: dict[str, Any],
               pyspy: str | None) -> tuple[float, float]:
    layout = cluster.layout
    W = layout.workers
    results.section(f"{W} workers: setup phase (fresh workers receive {files:,} files each,"
                    f" send {layout.agents:,} statuses)")
    if pyspy:
        cluster.master.startSpy(pyspy, os.path.join(layout.top, "spy-setup.txt"))
    t0, cpu0 = time.time(), time.process_time()
    for w in cluster.workers:
        w.start()
    shares = [len(layout.agentsOf(w)) for w in range(W)]
    inSync: list[float | None] = [None] * W
    sent: list[float | None] = [None] * W
    sentCount = [0] * W
    deadline = time.monotonic() + SETUP_TIMEOUT
    lastReport = time.monotonic()
    while time.monotonic() < deadline:
        cluster.tick()
        for i, w in enumerate(cluster.workers):
            for line in w.watcher.poll():
                m = IN_SYNC.search(line)
                if m and inSync[i] is None and int(m[1]) >= files:
                    inSync[i] = time.time()
                m = SENT.search(line)
                if m:
                    sentCount[i] += int(m[1])
                    if sent[i] is None and sentCount[i] >= shares[i]:
                        sent[i] = time.time()
        if all(x is not None for x in inSync) and all(x is not None for x in sent):
            if countStatuses(cluster.masterStatuses) >= layout.agents:
                break
        if time.monotonic() - lastReport > 30:
            lastReport = time.monotonic()
            print(f"  ... {time.time() - t0:.0f} s: {sum(x is not None for x in inSync)} of {W} workers in sync,"
                  f" {sum(x is not None for x in sent)} sent all their statuses", flush=True)
        time.sleep(0.5)
    else:
        dumpTails(cluster.nodes[:3])
        raise RuntimeError(f"setup not done in {SETUP_TIMEOUT:.0f} s: {sum(x is not None for x in inSync)} of {W}"
                           f" workers in sync, master holds {countStatuses(cluster.masterStatuses):,} statuses")
    t1, cpu1 = time.time(), time.process_time()
    cluster.master.stopSpy()
    cluster.sampler.sample(force=True)
    results.add("setup phase: workers' start -> every worker in sync and every status on the master",
                f"**{t1 - t0:.1f} s** (last worker in sync {max(inSync) - t0:.1f} s, last statuses sent"
                f" {max(sent) - t0:.1f} s after the start)")
    copies = copyBaseline(layout, W)
    summary["setup_seconds"], summary["copies_seconds"] = t1 - t0, copies
    results.add(f"  beside {W} sequential `cp -a` of the master's synchronised folders (same run, after the setup)",
                f"{copies:.1f} s: the setup took **{(t1 - t0) / copies:.2f}x** that")
    reportTasks(results, cluster.tasks(t0, t1), "setup", W, summary)
    reportLag(results, cluster.tasks(t0, t1))
    reportLocalIntegrity(results, cluster, t0, t1)
    reportResources(results, cluster, t0, t1, "setup", summary, (cpu1 - cpu0) / (t1 - t0))
    if pyspy:
        printSpy(os.path.join(layout.top, "spy-setup.txt"), f"py-spy of the master, {W} workers, setup phase",
                 top=25, idle=SPY_IDLE_POOL, functions=True)
    return t0, t1


def copyBaseline(layout: Layout, copies: int) -> float:
    """
    Seconds for C{copies} sequential C{cp -a} of the master's synchronised
    folders (etc/ and queue/agent-groups/) into a scratch folder beside the
    trees, each copy removed before the next (not timed).
    """
    scratch = os.path.join(layout.top, "cp-baseline")
    took = 0.0
    for _ in range(copies):
        os.makedirs(os.path.join(scratch, "queue"))
        started = time.perf_counter()
        subprocess.run(["cp", "-a", os.path.join(layout.masterHome, "etc"), scratch], check=True)
        subprocess.run(["cp", "-a", os.path.join(layout.masterHome, "queue", "agent-groups"),
                        os.path.join(scratch, "queue")], check=True)
        took += time.perf_counter() - started
        shutil.rmtree(scratch)
    return took


def touchCycle(cluster: Cluster, share: list[int], rng: random.Random) -> tuple[int, set[int]]:
    """One cycle's new keep-alives, on every worker; the stamp (ns) and the agents touched."""
    layout = cluster.layout
    stamp = time.time_ns()
    chosen = set()
    for w, home in enumerate(layout.workerHomes):
        folder = layout.statusFolder(home)
        for i in rng.sample(list(layout.agentsOf(w)), share[w]):
            writeStatus(folder, i, stamp)
            chosen.add(i)
    return stamp, chosen


def stableCycles(cluster: Cluster, seconds: float, change: float, rng: random.Random,
                 onMinute: Any = None) -> dict[str, Any]:
    """
    Cycles of C{change} of the agents getting a new keep-alive, one per
    period at a random moment in it, for C{seconds}; C{onMinute(minute)}
    is called at the start and after every whole minute.
    """
    share = cluster.layout.changedPerWorker(change)
    period = cluster.period
    t0 = time.time()
    cycles = 0
    last: tuple[int, set[int]] | None = None
    minute = 0
    if onMinute:
        onMinute(0)
    while time.time() - t0 < seconds:
        cycleStart = time.time()
        cluster.wait(rng.uniform(0, period * 0.5))
        last = touchCycle(cluster, share, rng)
        cycles += 1
        cluster.wait(max(0.0, period - (time.time() - cycleStart)))
        while onMinute and time.time() - t0 >= (minute + 1) * 60:
            minute += 1
            onMinute(minute)
    t1 = time.time()
    # The last cycle's statuses must reach the master.
    landed = None
    if last is not None:
        stamp, chosen = last
        deadline = time.monotonic() + SETTLE_TIMEOUT
        waiting = set(chosen)
        while waiting and time.monotonic() < deadline:
            cluster.tick()
            for i in list(waiting):
                try:
                    if os.stat(os.path.join(cluster.masterStatuses, statusName(i))).st_mtime_ns >= stamp - 1000:
                        waiting.discard(i)
                except FileNotFoundError:
                    pass
            time.sleep(0.1)
        landed = None if waiting else time.time() - stamp / 1e9
    return {"t0": t0, "t1": t1, "cycles": cycles, "perCycle": sum(share), "landed": landed}


def stablePhase(cluster: Cluster, args: argparse.Namespace, results: Results, summary: dict[str, Any],
                rng: random.Random, pyspy: str | None) -> None:
    W = cluster.layout.workers
    cluster.wait(2 * cluster.period)  # what the setup left in flight
    share = cluster.layout.changedPerWorker(args.change)
    results.section(f"{W} workers: stable phase ({args.stable_minutes:g} min; {sum(share):,} agents,"
                    f" {args.change * 100:g}%, get a new keep-alive every {cluster.period:g} s)")
    if pyspy:
        cluster.master.startSpy(pyspy, os.path.join(cluster.layout.top, "spy-stable.txt"))
    cpu0 = time.process_time()
    run = stableCycles(cluster, args.stable_minutes * 60, args.change, rng)
    bench = (time.process_time() - cpu0) / (time.time() - run["t0"])
    cluster.master.stopSpy()
    cluster.sampler.sample(force=True)
    results.add("cycles", f"{run['cycles']} of {run['perCycle']:,} changed statuses; the last cycle's all on"
                f" the master {run['landed']:.1f} s after the touch" if run["landed"] is not None else
                f"{run['cycles']}; the last cycle's statuses NOT all on the master after {SETTLE_TIMEOUT:.0f} s")
    reportTasks(results, cluster.tasks(run["t0"], run["t1"]), "stable", W, summary)
    reportLag(results, cluster.tasks(run["t0"], run["t1"]))
    reportLocalIntegrity(results, cluster, run["t0"], run["t1"])
    reportResources(results, cluster, run["t0"], run["t1"], "stable", summary, bench)
    if pyspy:
        printSpy(os.path.join(cluster.layout.top, "spy-stable.txt"),
                 f"py-spy of the master, {W} workers, stable phase", top=25, idle=SPY_IDLE_POOL, functions=True)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def keepsGrowing(samples: list[tuple[float, float]], limit: float) -> tuple[bool, str]:
    """
    C{samples}: (minutes, MB).  Growing: the least-squares slope over the
    second half is above C{limit} MB/hour, and the last sample is above the
    largest of the first half by more than L{SOAK_MARGIN_MB} (what the
    allocator moves by on its own: a few hundred kB from minute to minute).
    A warm-up in the first half (caches filling) does not count; a plateau
    in the second half, or a late peak that falls back, does not either.
    """
    if len(samples) < 4:
        return False, f"only {len(samples)} samples: no verdict (4 at least)"
    half = len(samples) // 2
    first, second = samples[:half], samples[half:]
    rate = slope([(m / 60, v) for m, v in second])
    overall = slope([(m / 60, v) for m, v in samples])
    firstMax = max(v for _, v in first)
    growing = rate > limit and samples[-1][1] > firstMax + SOAK_MARGIN_MB
    return growing, (f"slope over the second half {rate:+.1f} MB/h (limit {limit:g}), over all {overall:+.1f} MB/h;"
                     f" last {samples[-1][1]:.1f} MB vs first half's max {firstMax:.1f} MB"
                     f" (+{SOAK_MARGIN_MB:g} MB margin)")


def soak(cluster: Cluster, args: argparse.Namespace, results: Results, summary: dict[str, Any],
         rng: random.Random) -> bool:
    """
    The stable phase, on for C{--soak} minutes; the master's memory every
    minute: the mean, the least and the most of its one-second samples over
    that minute (a single sample lands anywhere in the bursts of manifests,
    tens of MB apart).  True if the means keep growing (L{keepsGrowing}).
    """
    W = cluster.layout.workers
    results.section(f"{W} workers: soak, {args.soak:g} min of the stable phase, the master's memory every minute")
    master = cluster.master
    soakStart = time.time()
    #: Per minute: (minutes since the start, USS mean, min, max, RSS mean, open files now).
    minutes: list[tuple[float, float, float, float, float, int | None]] = []

    def onMinute(minute: int) -> None:
        now = time.time()
        rows = [r for r in cluster.sampler.rows[master.name] if now - 60 <= r[0] <= now and r[2] and r[3]]
        if not rows:
            uss, rss = (master.uss() or 0) / 1024, (master.rss() or 0) / 1024
            minutes.append(((now - soakStart) / 60, uss, uss, uss, rss, master.openFiles()))
        else:
            uss = [r[2] / 1024 for r in rows]
            minutes.append(((now - soakStart) / 60, statistics.mean(uss), min(uss), max(uss),
                            statistics.mean(r[3] / 1024 for r in rows), master.openFiles()))
        m = minutes[-1]
        print(f"  soak minute {m[0]:.1f}: master USS mean {m[1]:.1f} MB (least {m[2]:.1f}, most {m[3]:.1f}),"
              f" RSS mean {m[4]:.1f} MB, {m[5]} open files", flush=True)

    run = stableCycles(cluster, args.soak * 60, args.change, rng, onMinute)
    results.add("soak: minute, master USS mean (least-most), RSS mean, MB; open files",
                "; ".join(f"{m:.1f}: {u:.1f} ({lo:.0f}-{hi:.0f}), {r:.1f}; {f}" for m, u, lo, hi, r, f in minutes))
    growing, why = keepsGrowing([(m[0], m[1]) for m in minutes], args.soak_slope)
    floorGrowing, floorWhy = keepsGrowing([(m[0], m[2]) for m in minutes], args.soak_slope)
    rssGrowing, rssWhy = keepsGrowing([(m[0], m[4]) for m in minutes], args.soak_slope)
    results.add("master USS, minute means", why)
    results.add("  the same on each minute's least USS", floorWhy)
    results.add("  the same on RSS means", rssWhy)
    results.add("verdict", f"**{'KEEPS GROWING' if growing else 'bounded'}** (USS means; the least USS alone would"
                f" say {'growing' if floorGrowing else 'bounded'}, RSS {'growing' if rssGrowing else 'bounded'})")
    reportTasks(results, cluster.tasks(run["t0"], run["t1"]), "stable", W, summary, "soak")
    reportLag(results, cluster.tasks(run["t0"], run["t1"]))
    reportResources(results, cluster, run["t0"], run["t1"], "stable", summary, label="soak")
    summary["soak"] = (minutes, growing, why)
    return growing


# ---------------------------------------------------------------------------


def runScale(workers: int, args: argparse.Namespace, results: Results, pyspy: str | None,
             last: bool) -> tuple[dict[str, Any], bool]:
    summary: dict[str, Any] = {}
    top = tempfile.mkdtemp(prefix=f"wazuhcluster-bench-scale-{workers}w-", dir=args.tmp)
    cluster = None
    growing = False
    try:
        layout = Layout(top, args.agents, workers)
        results.section(f"{workers} workers: trees")
        built = layout.write()
        results.add("trees", f"master: ruleset ({built['ruleset']} files under etc/), client.keys of"
                    f" {args.agents:,} lines, {args.agents:,} agent-groups files; {workers} fresh workers with"
                    f" {args.agents // workers:,} status files each; written in {built['seconds']:.1f} s")
        baseline(layout, results)
        os.sync()
        cluster = Cluster(layout, periods(args))
        try:
            files = startMaster(cluster, results)
            setupPhase(cluster, files, results, summary, pyspy)
            rng = random.Random(12 + workers)
            stablePhase(cluster, args, results, summary, rng, pyspy)
            if args.soak and last:
                growing = soak(cluster, args, results, summary, rng)
            reportProblems(results, cluster, workers)
        except BaseException:
            dumpTails(cluster.nodes[:3])
            raise
    finally:
        if cluster is not None:
            cluster.stop()
        if args.keep_logs:
            keepLogs(top, os.path.join(args.keep_logs, f"{workers}w"))
        started = time.perf_counter()
        dropTree(top)
        print(f"  (trees of {workers} workers removed in {time.perf_counter() - started:.0f} s)", flush=True)
    return summary, growing


def keepLogs(top: str, target: str) -> None:
    """Copy each node's cluster.log, task records and output, and the py-spy recordings, out of the run's trees."""
    for name in sorted(os.listdir(top)):
        for part in ("logs/cluster.log", "bench-tasks.jsonl", "node.out"):
            source = os.path.join(top, name, part)
            if os.path.isfile(source):
                os.makedirs(os.path.join(target, name), exist_ok=True)
                shutil.copy2(source, os.path.join(target, name, os.path.basename(part)))
        if name.startswith("spy-"):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(os.path.join(top, name), os.path.join(target, name))


def printThresholds(summaries: dict[int, dict[str, Any]]) -> None:
    """One table: each figure, its measure, Wazuh's threshold and the aim."""
    print("\n\nAGAINST WAZUH'S PERFORMANCE SUITE (mean / max; aim: a tenth of Wazuh's times, master under 100 MB;"
          " the soak is held to the stable phase's thresholds)")
    print(f"{'workers':>7}  {'phase':6}  {'figure':34} {'measured':>17} {'Wazuh':>13} {'aim':>13}")
    for W, summary in summaries.items():
        for phase in ("setup", "stable", "soak"):
            reference = "setup" if phase == "setup" else "stable"
            if not any(k[0] == phase for k in summary if isinstance(k, tuple)):
                continue
            for task in TASKS:
                for side in ("master", "worker"):
                    got = summary.get((phase, task, side))
                    ref = WAZUH_TASKS.get(W, {}).get(reference, {}).get(task, {}).get(side)
                    if not got and not ref:
                        continue
                    measured = f"{got[0]:.3f} / {got[1]:.3f}" if got else "-"
                    wazuh = f"{ref[0]:g} / {ref[1]:g}" if ref else "-"
                    aim = f"{ref[0] * AIM_TIME_FRACTION:.2f} / {ref[1] * AIM_TIME_FRACTION:.2f}" if ref else "-"
                    print(f"{W:>7}  {phase:6}  {TASK_NAMES[task] + ', ' + side + ' (s)':34} {measured:>17}"
                          f" {wazuh:>13} {aim:>13}")
            for figure, unit in (("cpu", "%"), ("uss", "MB"), ("rss", "MB"), ("fd", "")):
                for side in ("master", "worker"):
                    got = summary.get((phase, figure, side))
                    ref = WAZUH_RESOURCES.get(W, {}).get(reference, {}).get(side, {}).get(figure)
                    if not got:
                        continue
                    aim = f"< {AIM_MASTER_MB}" if figure == "uss" and side == "master" else "-"
                    label = f"{figure.upper()} {unit}".strip() + f", {side}"
                    print(f"{W:>7}  {phase:6}  {label:34} {got[0]:>8.1f} / {got[1]:<6.1f}"
                          f" {(f'{ref[0]:g} / {ref[1]:g}' if ref else '-'):>13} {aim:>13}")


def main(args: argparse.Namespace) -> int:
    exitOnTerminate()
    results = Results()
    started = time.perf_counter()
    pyspy = findPySpy() if args.profile else None
    if args.profile and pyspy is None:
        print("NOTE: --profile needs py-spy (pip install py-spy); running without it", flush=True)
    probe = tempfile.mkdtemp(prefix="wazuhcluster-bench-scale-", dir=args.tmp)
    try:
        machine(results, probe)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    results.add("command", " ".join([os.path.relpath(sys.argv[0]) if sys.argv else "bench/scale.py", *sys.argv[1:]]))
    chosen = periods(args)
    results.add("internal options of every node" + ("" if chosen == WAZUH_PERIODS else " (SHORTENED for the bench)"),
                ", ".join(f"{k}={v:g}" for k, v in options(chosen).items())
                + " (Wazuh's defaults: " + ", ".join(f"{k}={v:g}" for k, v in WAZUH_PERIODS.items()) + ")")
    results.add("nodes", "1 master and W workers, each a twistd process of its own (under scale.py --_node,"
                " which times the tasks), --debug")
    summaries: dict[int, dict[str, Any]] = {}
    growing = False
    counts = [int(w) for w in args.workers.split(",")]
    for k, W in enumerate(counts):
        summaries[W], grew = runScale(W, args, results, pyspy, k == len(counts) - 1)
        growing = growing or grew
    results.section("Whole run")
    results.add("wall time of the bench", f"{time.perf_counter() - started:.0f} s")
    results.add("load average at the end", " / ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("\n\nSUMMARY (wazuhcluster bench/scale.py)")
    print(results.table())
    printThresholds(summaries)
    for note in results.notes:
        print(f"NOTE: {note}")
    if growing:
        print("\nSOAK: the master's memory keeps growing (see above): exit status 1")
        return 1
    return 0


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="10,25", help="worker counts, one fresh cluster each, in order")
    parser.add_argument("--agents", type=int, default=50_000, help="registered agents, each with a status")
    parser.add_argument("--period", type=float, default=None,
                        help="sync_integrity, recalculate_integrity and sync_agent_info of every node, in seconds"
                        " (default: Wazuh's, 9, 8 and 10)")
    for name in WAZUH_PERIODS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=None,
                            help=f"{name} alone (default: --period, else Wazuh's {WAZUH_PERIODS[name]:g})")
    parser.add_argument("--stable-minutes", type=float, default=3.0, help="length of the stable phase")
    parser.add_argument("--change", type=float, default=0.01, help="fraction of the agents changing each period")
    parser.add_argument("--soak", type=float, default=0.0,
                        help="minutes of soak after the stable phase of the last worker count (0: none; at most 60)")
    parser.add_argument("--soak-slope", type=float, default=10.0,
                        help="MB/hour of the master's USS over the soak's second half that count as growing")
    parser.add_argument("--tmp", default=None, help="where the temporary trees go (default: $TMPDIR)")
    parser.add_argument("--keep-logs", default=None, metavar="DIR",
                        help="copy every node's cluster.log and task records to DIR/<W>w/ before the trees go")
    parser.add_argument("--profile", action="store_true", help="py-spy of the master during the stable phases")
    args = parser.parse_args(argv)
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--workers: worker counts separated by commas")
    if not counts or min(counts) < 1 or max(counts) > 40:
        parser.error("--workers: from 1 to 40 workers")
    if not 1 <= args.agents <= 99_999:
        parser.error("--agents from 1 to 99999 (agent IDs have 5 digits)")
    if args.agents < max(counts):
        parser.error("--agents must be at least the largest worker count")
    if any(not 0.5 <= v <= 60 for v in periods(args).values()):
        parser.error("--period and each period from 0.5 to 60 seconds")
    if not 0.5 <= args.stable_minutes <= 60:
        parser.error("--stable-minutes from 0.5 to 60")
    if not 0 < args.change <= 1:
        parser.error("--change more than 0, at most 1")
    if not 0 <= args.soak <= 60:
        parser.error("--soak from 0 to 60 minutes")
    if args.soak and args.soak < 3:
        parser.error("--soak: 3 minutes at least (4 samples)")
    problem = rulesetProblem()
    if problem:
        parser.error(problem)
    return args


if __name__ == "__main__":
    if sys.argv[1:2] == ["--_node"]:
        nodeWrapper(sys.argv[2:])  # a node of the run, in its own process
    else:
        sys.exit(main(parseArguments()))
