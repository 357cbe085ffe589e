#!/usr/bin/env python
"""
The master's memory with a fleet's files: its USS (unique set size, what
ending it would free) beside baselines measured in the same run.

    python bench/memory.py [--agents 50000] [--workers 10] [--tmp /dev/shm]
                           [--previous TREE | --previous-rev REV] [--settle 20]

One tree is written once: the master's home holds the real Wazuh ruleset, a
C{--agents}-line C{etc/client.keys} and as many C{queue/agent-groups/}
files (50,292 files with 50,000 agents); each worker's home holds only the
status files of its agents (agent i on worker i % W).  For each design
measured, a fresh copy of that tree is made and:

 1. the master starts alone and makes its first integrity computation: its
    USS then ("master alone, after its first scan");
 2. the workers start, receive every file and send every status; once all
    are in sync and the master holds every status, the bench waits
    C{--settle} seconds and samples the master's USS every second for
    another C{--settle} seconds (mean / max): "master with W workers".

The designs: this checkout's daemon, and the previous design (C{--previous
TREE}, a checkout of it, or C{--previous-rev REV}, by default C{main}, which
is extracted with C{git archive} into a temporary folder), each run the same
way with its tree first on C{PYTHONPATH}.  Beside them, the USS of a bare
Python with Twisted's reactor running, and of a Python that imported the
daemon's modules (no files, no scan).

The master keeps almost nothing per worker once the workers are in sync,
but what a setup with many workers at once leaves in the allocator shows
only with several: 10 workers by default (25 take three times as long).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from figures import REPO, Results, freePort  # bench/figures.py: first, it puts the checkout on sys.path
from processes import Node, dropTree, machine, procUSS, stopAll, waitFor  # bench/processes.py
from scale import Layout  # bench/scale.py: the same trees
from trees import AgentLayout, countStatuses, rulesetProblem

#: The periods of the run: Wazuh's defaults.
OPTIONS = {
    "sync_integrity": 9,
    "recalculate_integrity": 8,
    "sync_agent_info": 10,
    "connection_retry": 1,
    "keep_alive": 10,
    "check_worker_lastkeepalive": 600,
    "max_allowed_time_without_keepalive": 1200,
    "handshake_timeout": 60,
}

FIRST_SCAN = "Integrity computed:"
IN_SYNC = "Files in sync with the master"
SETUP_TIMEOUT = 900.0


def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.1f} MB"


class TreeNode(Node):
    """A node whose C{wazuhcluster} package comes from C{tree} (first on PYTHONPATH), or this checkout."""

    def __init__(self, tree: str | None, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tree = tree

    def command(self) -> list[str]:
        if self.tree is None:
            return super().command()
        return ["env", f"PYTHONPATH={self.tree}", *super().command()]


def bareUSS(code: str, tree: str | None = None) -> int | None:
    """The USS (kB) of a Python running C{code} and then waiting, measured 3 s after its start."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree
    process = subprocess.Popen([sys.executable, "-c", code + "\nimport time\ntime.sleep(60)"],
                               env=env, cwd=tempfile.gettempdir())
    try:
        time.sleep(3)
        return procUSS(process.pid)
    finally:
        process.kill()
        process.wait()


def runDesign(label: str, tree: str | None, pristine: AgentLayout, top: str, args: argparse.Namespace,
              results: Results) -> None:
    """Copy the pristine tree, run a master and the workers from C{tree}, report the master's USS."""
    run = os.path.join(top, "run")
    shutil.copytree(pristine.top, run, symlinks=True)
    layout = AgentLayout(run, pristine.agents, pristine.workers)
    key, port = secrets.token_hex(16), freePort()
    master = TreeNode(tree, layout.masterHome, "bench-master", "master", key, port, OPTIONS, debug=True)
    workers = [TreeNode(tree, home, name, "worker", key, port, OPTIONS)
               for home, name in zip(layout.workerHomes, layout.workerNames)]
    results.section(f"{label}: {tree or REPO}")
    try:
        master.start()
        master.waitListening()
        if waitFor(lambda: FIRST_SCAN in master.log_text(), 300) is None:
            raise RuntimeError("the master's first integrity computation did not end in 300 s")
        time.sleep(2)
        results.add("master alone, after its first scan: USS", mb(master.uss()))
        started = time.monotonic()
        for worker in workers:
            worker.start()
        statuses = layout.statusFolder(layout.masterHome)

        # Workers run without --debug: "in sync" is the master's view of each.
        def allInSync() -> bool:
            master.assertAlive()
            text = master.log_text()
            return (all(f"Integrity sync with worker {n}" in text for n in layout.workerNames)
                    and countStatuses(statuses) >= layout.agents)

        if waitFor(allInSync, SETUP_TIMEOUT) is None:
            raise RuntimeError(f"setup not done in {SETUP_TIMEOUT:.0f} s")
        results.add(f"setup with {len(workers)} workers (start -> every file sent, every status on the master)",
                    f"{time.monotonic() - started:.1f} s; USS then {mb(master.uss())}")
        time.sleep(args.settle)
        samples = []
        for _ in range(int(args.settle)):
            samples.append(master.uss() or 0)
            time.sleep(1)
        results.add(f"master with {len(workers)} workers, settled: USS mean / max",
                    f"**{mb(sum(samples) // len(samples))}** / {mb(max(samples))}")
    finally:
        stopAll([master, *workers])
        dropTree(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--tmp", default=None, help="where the trees go (e.g. /dev/shm)")
    parser.add_argument("--previous", default=None, help="a checkout of the previous design")
    parser.add_argument("--previous-rev", default="main", help="else this revision, extracted with git archive")
    parser.add_argument("--no-previous", action="store_true", help="measure this checkout only")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait, then to sample")
    args = parser.parse_args(argv)
    problem = rulesetProblem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if not 1 <= args.workers <= 25 or not 1 <= args.agents <= 200_000:
        parser.error("--workers is from 1 to 25, --agents from 1 to 200000")
    results = Results()
    top = tempfile.mkdtemp(prefix="bench-memory-", dir=args.tmp)
    try:
        machine(results, top)
        previous = args.previous
        if previous is None and not args.no_previous:
            previous = os.path.join(top, "previous")
            os.makedirs(previous)
            archive = subprocess.run(["git", "-C", REPO, "archive", args.previous_rev],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", previous], input=archive, check=True)
        results.section("Baselines (same run)")
        results.add("a bare Python with Twisted's reactor: USS",
                    mb(bareUSS("from twisted.internet import reactor")))
        daemon = "import wazuhcluster.tap, wazuhcluster.master.integrity, wazuhcluster.master.agentinfo"
        results.add("a Python that imported the daemon (this checkout): USS", mb(bareUSS(daemon)))
        pristine = Layout(os.path.join(top, "pristine"), args.agents, args.workers)
        started = time.perf_counter()
        pristine.write()
        results.add("tree", f"{args.agents:,} agents, {args.workers} workers, written in"
                    f" {time.perf_counter() - started:.1f} s")
        runDesign("This checkout", None, pristine, top, args, results)
        if previous is not None:
            runDesign(f"The previous design ({args.previous_rev if args.previous is None else 'given tree'})",
                      previous, pristine, top, args, results)
    finally:
        dropTree(top)
    print("\n" + results.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
