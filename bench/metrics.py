#!/usr/bin/env python
"""
What a Prometheus scrape costs the master: its CPU per C{GET /metrics}, with
25 workers and 50,000 agents.

    python bench/metrics.py [--workers 25] [--agents 50000] [--scrapes 100]
                            [--rounds 3] [--no-resync] [--tmp /dev/shm]

A master and C{--workers} workers, real C{twistd} processes on 127.0.0.1,
each with C{cluster.metrics_port} on a free port and Wazuh's default
periods.  The master holds the real ruleset and a C{--agents}-line
C{client.keys}; each worker the statuses of its share of the agents, which
reach the master by agent-info.  Once every worker has its files and the
master counts every agent, it measures the master's CPU (utime + stime
from /proc) over alternating windows of the same length:

 - idle: nothing scrapes (the baseline, measured in the same run: the
   cluster's own cycles);
 - scraping: C{--scrapes} scrapes, one every 0.1 s (the agent counts come
   from what the master keeps as statuses arrive).

The cost of one scrape is (scraping - idle) / scrapes, over C{--rounds}
pairs of windows (the median is the figure).  Then, unless C{--no-resync},
it waits until the agent counts are 5 minutes old and measures the one
scrape that rebuilds them from a full listing (50,000 status files stat'ed
in a thread), against an idle window of the same length: the cost that
comes once every 5 minutes, whatever the scrape interval.  Also printed:
the page's size and sample count, and the scrape's wall time as the client
sees it (p50, p99).

Every wait is bounded; every process is stopped and every tree removed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request

from figures import Results, freePort, percentile  # bench/figures.py: first, it puts the checkout on sys.path
from processes import Node, NodeCluster, dropTree, dumpTails, exitOnTerminate, machine, waitFor  # bench/processes.py
from trees import rulesetProblem, writeRuleset  # bench/trees.py
from agents import Layout  # bench/agents.py: client.keys and the workers' statuses

from prometheus_client.parser import text_string_to_metric_families

#: How old the master's agent counts may be before a scrape makes a full
#: listing (wazuhcluster.metrics.registry.AGENT_COUNTS_RESYNC), plus a margin.
RESYNC_AFTER = 305.0

SETUP_TIMEOUT = 600.0


class MetricsNode(Node):
    """A node whose internal options turn its metrics on, on a free port."""

    def __init__(self, home: str, name: str, nodeType: str, key: str, port: int) -> None:
        self.metricsPort = freePort()
        super().__init__(home, name, nodeType, key, port, {"metrics_port": self.metricsPort})

    def url(self) -> str:
        return f"http://127.0.0.1:{self.metricsPort}/metrics"


def scrape(node: MetricsNode) -> tuple[float, bytes]:
    """One C{GET /metrics}: its wall time as a client sees it, and the page."""
    started = time.perf_counter()
    with urllib.request.urlopen(node.url(), timeout=30) as answer:
        page = answer.read()
    return time.perf_counter() - started, page


def samples(page: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page.decode("utf-8"))
        for s in family.samples
    }


def ready(cluster: NodeCluster, agents: int) -> bool:
    """Every worker has been sent files and found in sync, and the master counts every agent as Active."""
    cluster.check()
    try:
        _, page = scrape(cluster.master)
    except OSError:
        return False
    found = samples(page)
    for worker in cluster.workers:
        sent = found.get(("wazuhcluster_files_sent_total", frozenset({("worker", worker.name)})), 0)
        checked = found.get(
            ("wazuhcluster_integrity_syncs_total", frozenset({("worker", worker.name), ("result", "in_sync")})), 0
        )
        if not (sent and checked):
            return False
    # The manager itself is one more Active agent.
    return found.get(("wazuhcluster_agents", frozenset({("status", "Active")})), 0) == agents + 1


def window(master: MetricsNode, seconds: float, scrapes: int = 0) -> tuple[float, list[float]]:
    """The master's CPU over C{seconds}, with C{scrapes} evenly spread scrapes; their wall times."""
    walls: list[float] = []
    before = master.cpu()
    started = time.monotonic()
    for i in range(scrapes):
        delay = started + i * seconds / scrapes - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        walls.append(scrape(master)[0])
    left = started + seconds - time.monotonic()
    if left > 0:
        time.sleep(left)
    return master.cpu() - before, walls


def main(args: argparse.Namespace) -> None:
    exitOnTerminate()
    problem = rulesetProblem()
    if problem:
        sys.exit(problem)
    results = Results()
    top = tempfile.mkdtemp(prefix="wazuhcluster-bench-metrics-", dir=args.tmp)
    cluster = None
    try:
        machine(results, top)
        results.section("Setup")
        layout = Layout(top, args.agents, args.workers)
        t = time.perf_counter()
        writeRuleset(layout.masterHome)
        layout.writeKeys()
        layout.putKeys(layout.masterHome)
        layout.writeStatuses()
        results.add("trees", f"ruleset and a {args.agents:,}-agent client.keys on the master, the agents'"
                    f" statuses on {args.workers} workers, in {time.perf_counter() - t:.1f} s")
        cluster = NodeCluster(layout, MetricsNode)
        t = time.perf_counter()
        cluster.master.start().waitListening()
        for worker in cluster.workers:
            worker.start()
        listedAt = time.monotonic()  # the first scrape makes the agent listing
        took = waitFor(lambda: ready(cluster, args.agents), SETUP_TIMEOUT)
        if took is None:
            raise RuntimeError(f"the cluster was not ready in {SETUP_TIMEOUT:.0f} s")
        results.add("setup", f"{args.workers} workers synced, {args.agents:,} agents Active on the master,"
                    f" in {time.perf_counter() - t:.1f} s")
        time.sleep(5)  # the first cycles' work done
        wall, page = scrape(cluster.master)
        results.add("the master's page", f"{len(page):,} bytes, {len(samples(page)):,} samples")

        results.section(f"CPU per scrape: {args.scrapes} scrapes, one every 0.1 s, against idle")
        seconds = args.scrapes * 0.1
        costs, walls = [], []
        for r in range(args.rounds):
            idle, _ = window(cluster.master, seconds)
            busy, w = window(cluster.master, seconds, args.scrapes)
            walls += w
            costs.append((busy - idle) / args.scrapes)
            results.add(f"round {r + 1}", f"idle {idle * 1000:.0f} ms CPU, scraping {busy * 1000:.0f} ms CPU"
                        f" in {seconds:.0f} s: {costs[-1] * 1000:.2f} ms per scrape")
        results.add("CPU per scrape (median of rounds)", f"{statistics.median(costs) * 1000:.2f} ms (target < 20 ms)")
        results.add("scrape wall time, client side", f"p50 {percentile(walls, 0.5) * 1000:.1f} ms,"
                    f" p99 {percentile(walls, 0.99) * 1000:.1f} ms")

        if args.resync:
            results.section(f"CPU of the scrape that rebuilds the agent counts ({args.agents:,} agents, every 5 min)")
            time.sleep(max(0.0, listedAt + RESYNC_AFTER - time.monotonic()))
            idle, _ = window(cluster.master, 3.0)
            busy, w = window(cluster.master, 3.0, 1)
            results.add("resync scrape", f"{(busy - idle) * 1000:.0f} ms CPU (idle {idle * 1000:.0f} ms in 3 s),"
                        f" {w[0] * 1000:.0f} ms wall")
            results.add("resync, spread over 5 minutes", f"{(busy - idle) / 300 * 60 * 1000:.0f} ms CPU per minute")
        cluster.check()
    except BaseException:
        if cluster is not None:
            dumpTails(cluster.nodes[:2])
        raise
    finally:
        if cluster is not None:
            cluster.stop()
        dropTree(top)
    print("\n\nSUMMARY (wazuhcluster bench/metrics.py)")
    print(results.table())
    for note in results.notes:
        print(f"NOTE: {note}")


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=25)
    parser.add_argument("--agents", type=int, default=50_000)
    parser.add_argument("--scrapes", type=int, default=100, help="scrapes per measured window (one every 0.1 s)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of idle and scraping windows")
    parser.add_argument("--no-resync", dest="resync", action="store_false",
                        help="skip the scrape that rebuilds the agent counts (it waits 5 minutes for it)")
    parser.add_argument("--tmp", default=None, help="where the temporary trees go (default: $TMPDIR)")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 30:
        parser.error("--workers from 1 to 30")
    if not args.workers <= args.agents <= 99_999:
        parser.error("--agents from --workers to 99999")
    if not 10 <= args.scrapes <= 1000 or not 1 <= args.rounds <= 10:
        parser.error("--scrapes 10..1000, --rounds 1..10")
    return args


if __name__ == "__main__":
    main(parseArguments())
