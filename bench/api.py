#!/usr/bin/env python
"""
The REST API under attack (issue 12, items 1, 3, 4 and 5): what hostile and
honest clients cost a master, with a worker syncing beside it.

    python bench/api.py [--slow 1100] [--flood-seconds 10] [--rate-seconds 5] [--redos-timeout 30]

and the same against another build of the daemon (its nodes run with that
tree first on PYTHONPATH; this script, its clients and its figures stay the
same), for example the main branch before the hardening:

    mkdir -p /tmp/wazuh-main && git -C /work/main archive 401bc91 | tar -x -C /tmp/wazuh-main
    PYTHONPATH=/tmp/wazuh-main python bench/api.py

The master runs under C{prlimit --nofile=1024:1024} (systemd's default
limit for a service), with the API's default settings; api.yaml says only
the port.  One user, with the default scrypt cost.  In order:

 1. Throughput: authenticated GET /cluster/node, sequential on one
    keep-alive connection, then 10 clients at once, C{--rate-seconds} each.
 2. Wrong-password flood: 8 clients (127.0.0.2-9) sending wrong passwords
    for C{--flood-seconds}, while a correct client (127.0.0.1) asks again
    and again; its latency before the flood is the baseline.
 3. An unauthenticated POST declaring 1 GiB: seconds to the answer, bytes
    sent by then, and the bytes the master spooled to temporary files.
 4. Slowloris: C{--slow} connections (32 per address from 127.0.0.2, ...)
    sending a header line a second for 20 s.  The master's descriptors
    (baseline, peak), how many connections it closed, whether a rule
    written on the master during the attack reached the worker, and the
    "Too many open files" lines.
 5. ReDoS: authenticated POSTs of a CDB list whose one line is 2,000,
    8,000 and 120,000 "a"s (no colon) to etc/lists/: seconds to the answer,
    at most C{--redos-timeout} each (a build that times out stays busy for
    minutes after: this section is last of the master's).
 6. API blobs: in a child process, a master's node calls and a worker
    holding the key, joined over in-memory TLS (tests/support/memorynet.py);
    the worker streams C{--blobs} api-blob streams of 32 MiB that no call
    claims.  The child's RSS before and after, and how many the master kept.

Every loop is bounded in count and time; the nodes are always stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time

from figures import Results, freePort  # bench/figures.py: first, it puts the checkout on sys.path
from processes import FAST_CYCLES, Node, dropTree, stopAll, waitFor  # bench/processes.py

# The clients of this checkout's tests (standard library only), whatever
# tree PYTHONPATH puts first for the daemon.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "support"))
import apiclients  # noqa: E402  (tests/support/apiclients.py)

from wazuhcluster.api.users import ApiUsers  # noqa: E402  (the same users file format in every build)

OPTIONS = FAST_CYCLES

USER, PASSWORD = "bench", "a bench password"
FD_LIMIT = 1024


class LimitedNode(Node):
    """A node run under the descriptor limit systemd gives a service by default."""

    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--", *super().command()]


def daemonTree() -> str:
    """Where the nodes' C{wazuhcluster} package comes from (PYTHONPATH first)."""
    return subprocess.run(
        [sys.executable, "-c", "import os, wazuhcluster; print(os.path.dirname(os.path.dirname(wazuhcluster.__file__)))"],
        capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=30,
    ).stdout.strip()


def rate(port: int, clients: int, seconds: float) -> tuple[float, int]:
    """Requests per second of C{clients} keep-alive clients for C{seconds}; and the failures."""
    counts = [0] * clients
    failures = [0] * clients
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        session = apiclients.Session(port, (USER, PASSWORD))
        try:
            while time.monotonic() < stop:
                try:
                    if session.get("/cluster/node") == 200:
                        counts[i] += 1
                    else:
                        failures[i] += 1
                except OSError:
                    failures[i] += 1
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return sum(counts) / (time.monotonic() - started), sum(failures)


def latencies(port: int, seconds: float, stop: threading.Event | None = None, most: int = 2000) -> list[float]:
    """Seconds of each authenticated GET of one client asking again and again."""
    session = apiclients.Session(port, (USER, PASSWORD), timeout=60)
    found: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and len(found) < most and not (stop and stop.is_set()):
            started = time.monotonic()
            status = session.get("/cluster/node")
            found.append(time.monotonic() - started if status == 200 else float("inf"))
    finally:
        session.close()
    return found


def ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))] * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=1100, help="slowloris connections")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--redos-timeout", type=float, default=30.0)
    parser.add_argument("--blobs", type=int, default=48, help="unclaimed 32 MiB blobs a worker sends")
    parser.add_argument("--skip", default="", help="sections to skip, by number, comma-separated")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients need more than 1,024

    results = Results()
    results.section("Setup")
    results.add("daemon tree (PYTHONPATH first)", daemonTree())
    base = tempfile.mkdtemp(prefix="bench-api-")
    key, clusterPort, apiPort = secrets.token_hex(16), freePort(), freePort()
    master = LimitedNode(os.path.join(base, "master"), "bench-master", "master", key, clusterPort, OPTIONS)
    worker = Node(os.path.join(base, "w1"), "worker-1", "worker", key, clusterPort, OPTIONS)
    with open(os.path.join(master.home, "api", "configuration", "api.yaml"), "w") as f:
        f.write(f"enabled: yes\nport: {apiPort}\n")
    ApiUsers(os.path.join(master.home, "api", "configuration", "users.json")).add(USER, PASSWORD)
    results.add("master", f"descriptor limit {FD_LIMIT}, API on 127.0.0.1:{apiPort}, default settings")
    try:
        master.start()
        master.waitListening()
        worker.start()
        if waitFor(lambda: f"Worker {worker.name} connected" in master.log_text(), 60) is None:
            raise RuntimeError("the worker did not join in 60 s")
        if waitFor(lambda: apiclients.ask(apiPort, "GET", "/cluster/node", auth=(USER, PASSWORD))[0] == 200, 30) is None:
            raise RuntimeError("the API does not answer")
        time.sleep(2)

        if "1" not in skip:
            results.section("1. Throughput: authenticated GET /cluster/node")
            perSecond, failed = rate(apiPort, 1, args.rate_seconds)
            results.add("sequential, one keep-alive connection", f"{perSecond:.0f} req/s ({failed} failed)")
            perSecond, failed = rate(apiPort, 10, args.rate_seconds)
            results.add("10 clients at once", f"{perSecond:.0f} req/s ({failed} failed)")

        if "2" not in skip:
            results.section("2. A correct client during a wrong-password flood from 8 addresses")
            quiet = latencies(apiPort, 3, most=100)
            results.add("baseline: median / p90, no flood", f"{ms(quiet, 0.5)} / {ms(quiet, 0.9)}")
            stop = threading.Event()
            answers: dict[int, int] = {}
            lock = threading.Lock()

            def flood(source: str) -> None:
                session = apiclients.Session(apiPort, (USER, "a wrong password"), source=source, timeout=60)
                try:
                    while not stop.is_set():
                        try:
                            status = session.get("/cluster/node")
                        except OSError:
                            status = 0
                        with lock:
                            answers[status] = answers.get(status, 0) + 1
                finally:
                    session.close()

            flooders = [threading.Thread(target=flood, args=(f"127.0.0.{i}",)) for i in range(2, 10)]
            for t in flooders:
                t.start()
            during = latencies(apiPort, args.flood_seconds, stop)
            stop.set()
            for t in flooders:
                t.join(90)
            results.add("during the flood: median / p90", f"{ms(during, 0.5)} / {ms(during, 0.9)} ({len(during)} requests)")
            results.add("flood answers", ", ".join(f"{n} x {s}" for s, n in sorted(answers.items())))

        if "3" not in skip:
            results.section("3. Unauthenticated POST declaring 1 GiB")
            spooled = [0]
            done = threading.Event()

            def watch() -> None:
                while not done.wait(0.05):
                    spooled[0] = max(spooled[0], apiclients.spooled_bytes(master.pid))

            watcher = threading.Thread(target=watch)
            watcher.start()
            rss0 = apiclients.rss_kb(master.pid)
            try:
                upload = apiclients.huge_upload(apiPort, 2**30, limit_seconds=120)
            finally:
                done.set()
                watcher.join()
            time.sleep(0.5)
            spooled[0] = max(spooled[0], apiclients.spooled_bytes(master.pid))
            seconds = upload["seconds"]
            results.add("answer", f"HTTP {upload['status']} {str(upload['answer'])[:100]}")
            results.add("seconds to the answer", f"{seconds * 1000:.1f} ms" if seconds is not None else "none")
            results.add("bytes sent by then", f"{upload['sent'] / 2**20:.1f} MiB")
            results.add("master's temporary files, peak", f"{spooled[0] / 2**20:.1f} MiB")
            results.add("master's RSS after - before", f"{(apiclients.rss_kb(master.pid) - rss0) / 1024:+.1f} MB")

        if "4" not in skip:
            results.section(f"4. Slowloris: {args.slow} slow connections (32 per address)")
            mark = len(master.log_text())
            fds0 = apiclients.open_fds(master.pid)
            results.add("master's descriptors before (limit)", f"{fds0} ({FD_LIMIT})")
            peak = [fds0]
            rule = os.path.join("etc", "rules", "during_slowloris.xml")
            written: list[float] = []
            arrived: list[float] = []

            def sample() -> None:
                peak[0] = max(peak[0], apiclients.open_fds(master.pid))
                if not written:
                    with open(os.path.join(master.home, rule), "w") as f:
                        f.write("<group name='slow,'/>\n")
                    written.append(time.monotonic())
                elif not arrived and os.path.exists(os.path.join(worker.home, rule)):
                    arrived.append(time.monotonic())

            sources = [f"127.0.0.{i}" for i in range(2, 2 + -(-args.slow // 32))]
            slow = apiclients.slow_clients(apiPort, sources, 32, 20, sample=sample)
            if not arrived and waitFor(lambda: os.path.exists(os.path.join(worker.home, rule)), 10) is not None:
                arrived.append(time.monotonic())
            results.add("connections opened / closed by the master / open at the end",
                        f"{slow['opened']} / {slow['closed_by_server']} / {slow['open_at_end']}")
            results.add("master's descriptors, peak", str(peak[0]))
            results.add("rule written during the attack reached the worker",
                        f"after {arrived[0] - written[0]:.1f} s" if arrived and written else "no (within 30 s)")
            text = master.log_text()[mark:]
            results.add("'Too many open files' lines in cluster.log", str(text.count("Too many open files")))
            results.add("worker disconnected during the attack", "yes" if "disconnected" in text else "no")
            time.sleep(2)

        if "5" not in skip:
            results.section("5. ReDoS: one CDB list line of n 'a's, no colon")
            for n in (2000, 8000, 120_000):
                started = time.monotonic()
                try:
                    status, answer = apiclients.ask(
                        apiPort, "POST", f"/cluster/{master.name}/files?path=etc/lists/redos-{n}", b"a" * n + b"\n",
                        auth=(USER, PASSWORD), timeout=args.redos_timeout,
                    )
                    took = time.monotonic() - started
                    results.add(f"{n:,} characters", f"{took * 1000:.1f} ms, HTTP {status}, error {answer.get('error')}")
                except OSError:
                    results.add(f"{n:,} characters", f"no answer within {args.redos_timeout:g} s")
                    results.note("the master is still matching; larger lines skipped")
                    break
        if "6" not in skip:
            results.section(f"6. A worker holding the key sends {args.blobs} unclaimed 32 MiB API blobs")
            child = subprocess.run(
                [sys.executable, "-c", BLOB_CHILD, os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 str(args.blobs)],
                capture_output=True, text=True, timeout=900, cwd=tempfile.gettempdir(),
            )
            lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
            if not lines:
                results.note(f"the blob child failed: {child.stderr[-500:]}")
            else:
                found = json.loads(lines[-1])
                results.add("daemon tree of the child", found["tree"])
                results.add("master's process RSS before", f"{found['before'] / 1024:.0f} MB")
                results.add("RSS after - before", f"{(found['after'] - found['before']) / 1024:+.0f} MB")
                results.add("blobs the master kept / sent / refused",
                            f"{found['kept']} / {found['sent']} / {found['refused']} ({found['seconds']:.0f} s)")
    finally:
        stopAll([worker, master])
        print("\n" + results.table())
        dropTree(base)


#: Section 6, run with C{python -c} from /tmp, so that the daemon's modules
#: come from PYTHONPATH first and this checkout only after (for its tests/).
BLOB_CHILD = """
import json, os, sys, time
sys.path.append(sys.argv[1])
from types import SimpleNamespace
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from tests.support.memorynet import MasterHarness, MemoryNetwork, settings
from wazuhcluster.api.nodecalls import NodeCalls
from wazuhcluster.protocol.stream import chunksOf

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

count = int(sys.argv[2])
clock = Clock()
net = MemoryNetwork(clock)
master = MasterHarness(clock)
calls = NodeCalls(SimpleNamespace(nodeName="master"), clock, lambda name: None, isMaster=True)
master.factory.nodeCalls = calls
master.factory.sinksFor = calls.sinksFor
link, joined = net.joinWorker(master, settings("hostile"))
piece = os.urandom(1 << 20)
before = rss()
sent = refused = 0
started = time.monotonic()
for i in range(count):
    d = Deferred.fromCoroutine(link.client.streams.send("api-blob", "%032x" % i, chunksOf(iter([piece] * 32)), timeout=600))
    outcome = []
    d.addBoth(outcome.append)
    while not outcome and time.monotonic() - started < 600:
        net.flush()
        clock.advance(0)
    if outcome and not hasattr(outcome[0], "value"):
        sent += 1
    else:
        refused += 1
print(json.dumps({"before": before, "after": rss(), "kept": len(calls.blobs._blobs), "sent": sent,
                  "refused": refused, "seconds": time.monotonic() - started,
                  "tree": os.path.dirname(os.path.dirname(sys.modules["wazuhcluster"].__file__))}))
"""

if __name__ == "__main__":
    main()
