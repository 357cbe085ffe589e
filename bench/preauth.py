#!/usr/bin/env python
"""
Strangers on the cluster port (issue 12, items 2 and 7): what connections
that complete TLS and never prove the cluster key cost the master.

    python bench/preauth.py [--connections 300] [--megabytes 4] [--workers 2] [--flood-seconds 10]

and the same against another build of the daemon (its nodes run with that
tree first on PYTHONPATH; this script, its strangers and its figures stay
the same), for example the main branch:

    git -C /work/main archive main | tar -x -C /tmp/wazuh-main
    PYTHONPATH=/tmp/wazuh-main python bench/preauth.py

What it does, with the daemon's default limits (nothing is tuned):

 1. A master and C{--workers} workers, real twistd processes on 127.0.0.1,
    with fast sync cycles; the master's VmRSS, USS and VmHWM as baseline.
 2. C{--connections} strangers from 127.0.0.2, .3, ... (10 per address)
    complete TLS, then stream one unterminated AMP box (64 KiB values, up to
    C{--megabytes} each), round-robin.  Halfway, a rule is written on the
    master.  Reported: how many the master closed or refused, its memory
    after the streams (and its peak), whether every worker kept its
    connection, and how long the rule took to reach every worker.
 3. The strangers close; the master's memory 3 s later.
 4. For C{--flood-seconds}: pre-proof Authenticate boxes without their
    nonce, one per connection, from C{--flood-addresses} other addresses
    in turn.  Reported:
    connections per second, cluster.log growth in bytes per second and
    lines, and traceback lines.

Every loop is bounded in count and time; the nodes are always stopped.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time

from figures import Results, freePort  # bench/figures.py: first, it puts the checkout on sys.path
from processes import FAST_CYCLES, Node, dropTree, stopAll, waitFor  # bench/processes.py

# The strangers of this checkout's tests (standard library only), whatever
# tree PYTHONPATH puts first for the daemon.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "support"))
import strangers  # noqa: E402  (tests/support/strangers.py)

OPTIONS = FAST_CYCLES

PER_ADDRESS = 10


def daemonTree() -> str:
    """Where the nodes' C{wazuhcluster} package comes from (PYTHONPATH first)."""
    return subprocess.run(
        [sys.executable, "-c", "import os, wazuhcluster; print(os.path.dirname(os.path.dirname(wazuhcluster.__file__)))"],
        capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=30,
    ).stdout.strip()


def memory(node: Node) -> tuple[int, int, int]:
    return node.rss() or 0, node.uss() or 0, node.hwm() or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--megabytes", type=float, default=4.0, help="junk each stranger tries to send")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of strangers (memory is reused?)")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--flood-addresses", type=int, default=30, help="addresses of the flood, not used before")
    args = parser.parse_args()

    results = Results()
    results.section("Setup")
    results.add("daemon tree (PYTHONPATH first)", daemonTree())
    results.add("strangers", f"{args.connections} from {-(-args.connections // PER_ADDRESS)} addresses,"
                f" up to {args.megabytes:g} MiB each")
    base = tempfile.mkdtemp(prefix="bench-preauth-")
    key, port = secrets.token_hex(16), freePort()
    master = Node(os.path.join(base, "master"), "bench-master", "master", key, port, OPTIONS)
    workers = [
        Node(os.path.join(base, f"w{i}"), f"worker-{i}", "worker", key, port, OPTIONS)
        for i in range(args.workers)
    ]
    nodes = [master, *workers]
    sockets: list = []
    try:
        master.start()
        master.waitListening()
        for worker in workers:
            worker.start()
        joined = waitFor(lambda: all(f"Worker {w.name} connected" in master.log_text() for w in workers), 60)
        if joined is None:
            raise RuntimeError("the workers did not join in 60 s")
        time.sleep(3)  # first syncs
        rss0, uss0, hwm0 = memory(master)
        results.add("master before (RSS / USS / peak)", f"{rss0 / 1024:.1f} / {uss0 / 1024:.1f} / {hwm0 / 1024:.1f} MB")
        masterMark = len(master.log_text())
        workerMarks = [len(w.log_text()) for w in workers]

        addresses = strangers.source_addresses(-(-args.connections // PER_ADDRESS))
        for round_ in range(1, args.rounds + 1):
            results.section(f"Round {round_}: strangers streaming an unterminated box")
            refused = 0
            started = time.monotonic()
            for n in range(args.connections):
                try:
                    sockets.append(strangers.connect(port, addresses[n // PER_ADDRESS], timeout=10))
                except OSError:
                    refused += 1
            results.add("TLS connections made / refused at once", f"{len(sockets)} / {refused} in {time.monotonic() - started:.1f} s")
            total = int(args.megabytes * 1024 * 1024)
            pieces = list(strangers.unterminated_box(total))
            open_ = list(sockets)
            sent = 0
            ruleAt = None
            rule = os.path.join(master.home, "etc", "rules", f"bench_preauth_rule{round_}.xml")
            started = time.monotonic()
            for index, piece in enumerate(pieces):
                if ruleAt is None and index >= len(pieces) // 2:
                    os.makedirs(os.path.dirname(rule), exist_ok=True)
                    with open(rule, "w") as f:
                        f.write("<group name='written during the attack'/>\n")
                    ruleAt = time.monotonic()
                for sock in list(open_):
                    if strangers.send_piece(sock, piece, timeout=2):
                        sent += len(piece)
                    else:
                        open_.remove(sock)
                if not open_ or time.monotonic() - started > 300:
                    break
            if ruleAt is None:
                with open(rule, "w") as f:
                    f.write("<group name='written during the attack'/>\n")
                ruleAt = time.monotonic()
            results.add("junk accepted by the sockets", f"{sent / 1048576:.1f} MiB in {time.monotonic() - started:.1f} s")
            stillOpen = sum(not strangers.closed_by_peer(s, timeout=0.02) for s in open_)
            results.add("strangers still connected after streaming", f"{stillOpen} of {len(sockets)}")
            rss1, uss1, hwm1 = memory(master)
            results.add("master with the strangers (RSS / USS / peak)",
                        f"{rss1 / 1024:.1f} / {uss1 / 1024:.1f} / {hwm1 / 1024:.1f} MB")
            results.add("master memory added (RSS / USS / peak)",
                        f"+{(rss1 - rss0) / 1024:.1f} / +{(uss1 - uss0) / 1024:.1f} / +{(hwm1 - hwm0) / 1024:.1f} MB")
            ruleArrived = waitFor(lambda: all(
                os.path.exists(os.path.join(w.home, "etc", "rules", f"bench_preauth_rule{round_}.xml")) for w in workers), 60)
            results.add("rule written during the attack reached every worker",
                        "no (60 s)" if ruleArrived is None else f"yes, {time.monotonic() - ruleAt:.1f} s after it was written")
            lost = sum(w.log_text()[mark:].count("Lost connection") for w, mark in zip(workers, workerMarks))
            gone = master.log_text()[masterMark:].count("disconnected")
            results.add("workers that lost their connection", f"{lost} (master saw {gone} disconnections)")

            results.section(f"Round {round_}: after the strangers close")
            for sock in sockets:
                strangers.close(sock)
            sockets.clear()
            time.sleep(3)
            rss2, uss2, _ = memory(master)
            results.add("master 3 s later (RSS / USS)", f"{rss2 / 1024:.1f} / {uss2 / 1024:.1f} MB"
                        f" (+{(rss2 - rss0) / 1024:.1f} / +{(uss2 - uss0) / 1024:.1f} MB over the baseline)")

        results.section("Authenticate flood (no nonce)")
        logBefore = os.path.getsize(master.log)
        linesBefore = master.log_text().count("\n")
        floodFrom = strangers.source_addresses(len(addresses) + args.flood_addresses)[len(addresses):]
        count = 0
        started = time.monotonic()
        while time.monotonic() - started < args.flood_seconds:
            try:
                sock = strangers.connect(port, floodFrom[count % len(floodFrom)], timeout=5)
            except OSError:
                count += 1
                continue
            try:
                strangers.send_piece(sock, strangers.authenticate_without_nonce(), timeout=2)
                strangers.closed_by_peer(sock, timeout=2)
            finally:
                strangers.close(sock)
            count += 1
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        text = master.log_text()
        grown = os.path.getsize(master.log) - logBefore
        results.add("connections", f"{count} in {elapsed:.1f} s ({count / elapsed:.0f}/s)")
        results.add("cluster.log growth", f"{grown / 1024:.1f} KB ({grown / elapsed / 1024:.1f} KB/s),"
                    f" {text.count(chr(10)) - linesBefore} lines")
        results.add("traceback lines in cluster.log", str(text.count("Traceback")))
        for node in nodes:
            node.assertAlive()
    finally:
        for sock in sockets:
            strangers.close(sock)
        stopAll(nodes)
        dropTree(base)
    print()
    print(results.table())


if __name__ == "__main__":
    main()
