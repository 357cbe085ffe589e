#!/usr/bin/env python
"""
Connection benchmark of the cluster daemon: handshakes, keep-alives, sealing.

    python bench/connect.py [--sizes 10,50,100] [--keepalives 20000] [--profile]

What it measures (see bench/README.md):

 1. Join time of N workers (N = 10, 50, 100), all run in this process with
    the project's own worker code (L{MasterConnectionFactory} over
    C{wrapClientTLS(clientOptions(...))}, then C{MasterConnection.join()}),
    against a real master started as a separate C{twistd -n wazuhcluster}
    process listening on 127.0.0.1 only.  Each worker has its own node name
    and its own self-signed certificate.  After each round the master's
    control socket must list exactly those N workers.
 2. Master CPU seconds per 1000 keep-alives (utime+stime of the master from
    /proc/PID/stat), with the last round's workers connected, a bounded
    number of keep-alives, a bounded number in flight.
 3. The cost of AES-GCM sealing against plain AMP: (a) in process, one
    keep-alive box serialised, sealed, opened and decoded against serialised
    and decoded in clear; (b) end to end in memory (twisted.test.iosim, no
    TLS), KeepAlive round trips over the production sealed pair
    (L{MasterConnection} <-> L{WorkerConnection}) against a plain
    C{amp.AMP} pair with the same responder.

Every loop is bounded in count and in time; the master is always stopped
and the temporary home removed.  Nothing here changes the daemon.
"""

from __future__ import annotations

import argparse
import os
import platform
import pstats
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols import amp
from twisted.test import iosim

from figures import Results, freePort, percentile  # bench/figures.py: first, it puts the checkout on sys.path
from processes import CLUSTER, MASTER_NAME, Node  # bench/processes.py

import wazuhcluster
from wazuhcluster.control.client import ControlClient
from wazuhcluster.master.fleet import Fleet
from wazuhcluster.internal_options import InternalOptions
from wazuhcluster.protocol.link import LinkSettings
from wazuhcluster.master.connection import WorkerConnection
from wazuhcluster.protocol.sealed import decodeBox
from wazuhcluster.protocol.sealing import (
    WORKER_TO_MASTER,
    Opener,
    Sealer,
    rootKey,
    sealersFor,
)
from wazuhcluster.worker.connection import MasterConnection, MasterConnectionFactory
from wazuhcluster.protocol.workercommands import KeepAlive
from wazuhcluster.tls import TLSMaterial, clientOptions, makeSelfSigned


#: Hard bounds, whatever the arguments say.
MASTER_START_TIMEOUT = 20.0
JOIN_ROUND_TIMEOUT = 45.0
DISCONNECT_TIMEOUT = 15.0
KEEPALIVE_PHASE_TIMEOUT = 60.0
E2E_TIMEOUT = 20.0
MICRO_TIMEOUT = 10.0


# ---------------------------------------------------------------------------
# Small helpers.


def procCPUPrecise(pid: int) -> float:
    """
    CPU seconds of all threads of C{pid} from /proc/PID/task/*/schedstat
    (nanoseconds), where /proc/PID/stat counts in clock ticks (10 ms): used
    for the short join rounds.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def listenOverflows() -> int | None:
    """The kernel's TcpExt ListenOverflows counter (system-wide), if readable."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table["ListenOverflows"]) if "ListenOverflows" in table else None
    return None


def listenBacklog(port: int) -> int | None:
    """The backlog of the socket listening on 127.0.0.1:C{port} (ss's Send-Q)."""
    try:
        lines = subprocess.run(
            ["ss", "-ltnH"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[3] == f"127.0.0.1:{port}":
            return int(fields[2])
    return None


def selfCPU() -> float:
    return time.process_time()


def sleep(reactor: Any, seconds: float) -> Deferred:
    return task.deferLater(reactor, seconds, lambda: None)



# ---------------------------------------------------------------------------
# The master, as a real separate process.


PROFILED_MASTER = r"""
import cProfile, signal, sys
from twisted.scripts.twistd import run
profile = cProfile.Profile()
out = sys.argv.pop(1)
def start(*_):
    profile.enable()
def stop(*_):
    profile.disable()
    profile.dump_stats(out)
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
run()
"""


class Master(Node):
    """A master node in a temporary home, run by twistd in its own process."""

    startTimeout = MASTER_START_TIMEOUT

    def __init__(self, profileTo: str | None = None) -> None:
        # Keep the master's own cycles out of the way of a run of a few
        # minutes: no worker is dropped for silence, handshakes have time.
        super().__init__(
            tempfile.mkdtemp(prefix="wazuhcluster-bench-"), MASTER_NAME, "master", secrets.token_hex(16),
            freePort(),
            {
                "check_worker_lastkeepalive": 600,
                "max_allowed_time_without_keepalive": 1200,
                "handshake_timeout": 60,
                # All the bench's workers come from 127.0.0.1, a hundred at once.
                "max_unauthenticated_per_address": 1024,
            },
            output="master.out",
        )
        self.profileTo = profileTo
        self.backlog: int | None = None

    def command(self) -> list[str]:
        if self.profileTo:
            return [sys.executable, "-c", PROFILED_MASTER, self.profileTo, *self.twistdArguments()]
        return super().command()

    def waitReady(self) -> None:
        """Wait until the port accepts and the control socket exists."""
        self.waitListening()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; always removes the home."""
        try:
            super().stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def logCount(self, needle: str) -> int:
        try:
            with open(self.log, errors="replace") as f:
                return sum(needle in line for line in f)
        except OSError:
            return 0


# ---------------------------------------------------------------------------
# Workers, in this process.


class TimedMasterConnection(MasterConnection):
    """The project's worker connection, noting when TLS came up."""

    tlsAt: float | None = None

    def handshakeCompleted(self) -> None:
        self.tlsAt = time.perf_counter()
        super().handshakeCompleted()


class TimedFactory(MasterConnectionFactory):
    def buildProtocol(self, addr: object) -> MasterConnection:
        protocol = TimedMasterConnection(self.settings, self.clock)
        protocol.factory = self
        self.lastBuilt = protocol
        return protocol


def workerSettings(name: str, root: bytes, tls: TLSMaterial) -> LinkSettings:
    return LinkSettings(
        clusterName=CLUSTER,
        nodeName=name,
        nodeType="worker",
        version=wazuhcluster.__version__,
        masterAddress="127.0.0.1",
        root=root,
        tls=tls,
        options=InternalOptions(),
    )


def makeTLS(count: int) -> list[TLSMaterial]:
    materials = []
    for i in range(count):
        key, certificate = makeSelfSigned(f"bench-worker-{i}")
        materials.append(TLSMaterial(key, certificate))
    return materials


async def joinOne(reactor: Any, port: int, settings: LinkSettings) -> dict[str, Any]:
    started = time.perf_counter()
    endpoint = wrapClientTLS(
        clientOptions(settings.tls), TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    )
    protocol = await endpoint.connect(TimedFactory(settings, reactor))
    connected = time.perf_counter()
    await protocol.join()
    joined = time.perf_counter()
    return {
        "protocol": protocol,
        "tcp": connected - started,
        "tls": (protocol.tlsAt or joined) - started,
        "total": joined - started,
    }


async def listedWorkers(reactor: Any, socketPath: str) -> list[str]:
    client = await ControlClient.connect(reactor, socketPath)
    try:
        nodes = await client.nodes()
    finally:
        client.close()
    return [n.name for n in nodes if n.type == "worker"]


async def disconnectAll(reactor: Any, master: Master, protocols: list[MasterConnection]) -> None:
    lost = [p.whenLost() for p in protocols]
    for p in protocols:
        if p.transport is not None:
            p.transport.loseConnection()
    await defer.DeferredList(lost).addTimeout(DISCONNECT_TIMEOUT, reactor)
    deadline = time.monotonic() + DISCONNECT_TIMEOUT
    while time.monotonic() < deadline:
        if not await listedWorkers(reactor, master.socketPath):
            return
        await sleep(reactor, 0.05)
    raise RuntimeError("the master still lists workers after they disconnected")


async def joinRound(
    reactor: Any, master: Master, n: int, root: bytes, tls: list[TLSMaterial], results: Results
) -> list[MasterConnection]:
    names = [f"bench-{n}-{i:03d}" for i in range(n)]
    settings = [workerSettings(name, root, tls[i % len(tls)]) for i, name in enumerate(names)]
    masterBefore, selfBefore = procCPUPrecise(master.pid), selfCPU()
    overflowsBefore = listenOverflows()
    started = time.perf_counter()
    attempts = [Deferred.fromCoroutine(joinOne(reactor, master.port, s)) for s in settings]
    outcome = await defer.gatherResults(attempts, consumeErrors=True).addTimeout(
        JOIN_ROUND_TIMEOUT, reactor
    )
    wall = time.perf_counter() - started
    masterCPU, benchCPU = procCPUPrecise(master.pid) - masterBefore, selfCPU() - selfBefore
    protocols = [o["protocol"] for o in outcome]
    if not all(p.joined and p.masterName == MASTER_NAME for p in protocols):
        raise RuntimeError("a worker returned from join() without having joined")
    listed = await listedWorkers(reactor, master.socketPath)
    ok = sorted(listed) == sorted(names)
    totals = [o["total"] for o in outcome]
    tlsTimes = [o["tls"] for o in outcome]
    results.add(f"N={n:<3} join wall time (all concurrent)", f"{wall * 1000:8.1f} ms")
    results.add(f"N={n:<3} wall / N", f"{wall / n * 1000:8.2f} ms/worker")
    results.add(
        f"N={n:<3} per-worker join latency mean/p50/max",
        f"{statistics.mean(totals) * 1000:.1f} / {percentile(totals, 0.5) * 1000:.1f}"
        f" / {max(totals) * 1000:.1f} ms",
    )
    results.add(
        f"N={n:<3} of which TCP+TLS up (mean)",
        f"{statistics.mean(tlsTimes) * 1000:.1f} ms,"
        f" key proof + Hello after TLS {statistics.mean(t - s for t, s in zip(totals, tlsTimes)) * 1000:.1f} ms",
    )
    results.add(
        f"N={n:<3} CPU per join: master / bench(workers)",
        f"{masterCPU / n * 1000:.2f} / {benchCPU / n * 1000:.2f} ms",
    )
    overflowsAfter = listenOverflows()
    if overflowsBefore is not None and overflowsAfter is not None:
        overflows = overflowsAfter - overflowsBefore
        results.add(f"N={n:<3} kernel listen-queue overflows", f"{overflows}" + (
            "  (SYNs dropped: those workers waited for a SYN retransmit, ~1 s)"
            if overflows else ""))
        if overflows:
            results.notes.append(
                f"N={n}: {overflows} connections overflowed the master's listen queue"
                f" (backlog {master.backlog}) and waited for the kernel's SYN retransmit"
                " about 1 s later: that is the join-time tail."
            )
    results.add(
        f"N={n:<3} control socket lists",
        f"{len(listed)} workers ({'OK, exactly these N' if ok else 'MISMATCH'})",
    )
    if not ok:
        raise RuntimeError(f"master lists {len(listed)} workers, expected the {n} joined")
    return protocols


# ---------------------------------------------------------------------------
# Keep-alives against the real master.


async def keepAlives(
    reactor: Any, protocols: list[MasterConnection], total: int, window: int, timeout: float
) -> tuple[int, float]:
    """Send about C{total} keep-alives, C{window} in flight per worker."""
    lanes = [p for p in protocols for _ in range(window)]
    share, extra = divmod(total, len(lanes))
    deadline = time.perf_counter() + timeout
    done = [0]

    async def lane(protocol: MasterConnection, count: int) -> None:
        for _ in range(count):
            if time.perf_counter() > deadline:
                return
            await protocol.callRemote(KeepAlive)
            done[0] += 1

    started = time.perf_counter()
    await defer.gatherResults(
        [Deferred.fromCoroutine(lane(p, share + (i < extra))) for i, p in enumerate(lanes)],
        consumeErrors=True,
    ).addTimeout(timeout + 10, reactor)
    return done[0], time.perf_counter() - started


async def keepAlivePhase(
    reactor: Any, master: Master, protocols: list[MasterConnection], args: argparse.Namespace,
    results: Results,
) -> float:
    """Adds the figures; returns the master's CPU seconds per keep-alive."""
    await keepAlives(reactor, protocols, min(1000, args.keepalives), 1, 10)  # warm-up
    runs = []
    for _ in range(args.repeat):
        masterBefore, selfBefore = master.cpu(), selfCPU()
        preciseBefore = procCPUPrecise(master.pid)
        count, wall = await keepAlives(
            reactor, protocols, args.keepalives, args.window, KEEPALIVE_PHASE_TIMEOUT
        )
        runs.append({
            "count": count,
            "wall": wall,
            "master": master.cpu() - masterBefore,
            "precise": procCPUPrecise(master.pid) - preciseBefore,
            "bench": selfCPU() - selfBefore,
        })
        if count < args.keepalives:
            results.notes.append(
                f"keep-alive run hit its {KEEPALIVE_PHASE_TIMEOUT:.0f}s bound after {count}"
            )

    def spread(key: Callable[[dict], float], fmt: str) -> str:
        values = sorted(key(r) for r in runs)
        text = fmt.format(statistics.median(values))
        if len(values) > 1:
            text += f"  [runs: {', '.join(fmt.format(v) for v in values)}]"
        return text

    inFlight = len(protocols) * args.window
    results.add("keep-alives answered", f"{len(runs)} runs x {runs[0]['count']} over"
                f" {len(protocols)} workers, {inFlight} in flight (median shown)")
    results.add("keep-alives/s", spread(lambda r: r["count"] / r["wall"], "{:,.0f}"))
    results.add("master CPU s per 1000 keep-alives (/proc stat)",
                spread(lambda r: r["master"] / r["count"] * 1000, "{:.3f}"))
    results.add("  same from schedstat (ns resolution)",
                spread(lambda r: r["precise"] / r["count"] * 1000, "{:.3f}"))
    results.add("  master busy during the runs",
                spread(lambda r: r["precise"] / r["wall"] * 100, "{:.0f}%"))
    results.add("bench (workers side) CPU s per 1000 keep-alives",
                spread(lambda r: r["bench"] / r["count"] * 1000, "{:.3f}"))
    perKeepAlive = statistics.median(r["precise"] / r["count"] for r in runs)

    if master.profileTo:
        master.signal(signal.SIGUSR1)
        await sleep(reactor, 0.2)
        profiled, _ = await keepAlives(
            reactor, protocols, min(args.keepalives, 5000), args.window, 30
        )
        master.signal(signal.SIGUSR2)
        for _ in range(100):
            await sleep(reactor, 0.05)
            if os.path.exists(master.profileTo):
                break
        await sleep(reactor, 0.3)
        print(f"\n== cProfile of the master over {profiled} keep-alives (profiled run, not timed)")
        stats = pstats.Stats(master.profileTo)
        stats.sort_stats("tottime").print_stats(25)
        print("-- the daemon's own functions, and the AEAD calls, by cumulative time:")
        stats.sort_stats("cumulative").print_stats(r"wazuhcluster/|AESGCM|crypt")
    return perKeepAlive


# ---------------------------------------------------------------------------
# Sealing against plain AMP, in this process.


def bestPerCall(body: Callable[[int], None], n: int, repeats: int = 5) -> float:
    """Best of C{repeats} timings of C{body(n)}, per iteration, in seconds."""
    best = float("inf")
    deadline = time.perf_counter() + MICRO_TIMEOUT
    for _ in range(repeats):
        started = time.perf_counter()
        body(n)
        best = min(best, (time.perf_counter() - started) / n)
        if time.perf_counter() > deadline:
            break
    return best


def microbench(n: int, results: Results) -> None:
    key = secrets.token_bytes(32)
    # What a worker's callRemote(KeepAlive) puts on the wire (inner box).
    request = amp.AmpBox({amp.COMMAND: KeepAlive.commandName, amp.ASK: b"1a2b"})

    def plain(k: int) -> None:
        for _ in range(k):
            decodeBox(request.serialize())

    def sealed(k: int) -> None:
        sealer, opener = Sealer(key, WORKER_TO_MASTER), Opener(key, WORKER_TO_MASTER)
        for _ in range(k):
            decodeBox(opener.open(sealer.seal(request.serialize())))

    def sealedWire(k: int) -> None:
        # Also the outer box {"s": sealed} that SealedAMP sends and parses.
        sealer, opener = Sealer(key, WORKER_TO_MASTER), Opener(key, WORKER_TO_MASTER)
        for _ in range(k):
            outer = amp.AmpBox({b"s": sealer.seal(request.serialize())}).serialize()
            decodeBox(opener.open(decodeBox(outer)[b"s"]))

    inner = request.serialize()

    def aeadOnly(k: int) -> None:
        sealer, opener = Sealer(key, WORKER_TO_MASTER), Opener(key, WORKER_TO_MASTER)
        for _ in range(k):
            opener.open(sealer.seal(inner))

    tPlain, tSealed = bestPerCall(plain, n), bestPerCall(sealed, n)
    tWire, tAEAD = bestPerCall(sealedWire, n), bestPerCall(aeadOnly, n)
    results.add("keep-alive box", f"{len(inner)} bytes serialised, {len(inner) + 24} sealed")
    results.add("plain: serialize + decodeBox", f"{tPlain * 1e6:.2f} us/message")
    results.add("sealed: serialize + seal + open + decodeBox", f"{tSealed * 1e6:.2f} us/message")
    results.add("  ratio sealed / plain", f"{tSealed / tPlain:.2f}x  (+{(tSealed - tPlain) * 1e6:.2f} us)")
    results.add("  of which Sealer.seal + Opener.open alone", f"{tAEAD * 1e6:.2f} us/message")
    results.add("sealed incl. outer box serialize+decode", f"{tWire * 1e6:.2f} us/message"
                f"  ({tWire / tPlain:.2f}x plain)")


class PlainMaster(amp.AMP):
    """A plain AMP master end with the production keep-alive responder's body."""

    log = Logger()

    def __init__(self, clock: task.Clock) -> None:
        super().__init__()
        self.clock = clock
        self.lastKeepAlive = 0.0

    @KeepAlive.responder
    def keepAlive(self) -> dict[str, Any]:
        self.lastKeepAlive = self.clock.seconds()
        return {}


def sealedPair() -> tuple[amp.AMP, amp.AMP, iosim.IOPump]:
    """The production classes, sealed with matching keys, over an in-memory link."""
    clock = task.Clock()
    root = rootKey(secrets.token_hex(16))
    tls = makeTLS(1)[0]
    masterSettings = LinkSettings(
        CLUSTER, MASTER_NAME, "master", wazuhcluster.__version__, "127.0.0.1", root, tls,
        InternalOptions(),
    )
    workerSettings_ = workerSettings("bench-e2e", root, tls)
    fleet = Fleet(masterSettings, clock)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: WorkerConnection(fleet, masterSettings, clock),
        lambda: MasterConnection(workerSettings_, clock),
    )
    client.handshakeCompleted()  # no TLS here; keeps its Deferred quiet
    workerNonce, masterNonce, binding = os.urandom(32), os.urandom(32), b"in-memory"
    client.startSealing(*sealersFor("worker", root, workerNonce, masterNonce, binding))
    server.startSealing(*sealersFor("master", root, workerNonce, masterNonce, binding))
    server.nodeName = "bench-e2e"  # as if Hello had been accepted
    return client, server, pump


def plainPair() -> tuple[amp.AMP, amp.AMP, iosim.IOPump]:
    clock = task.Clock()
    client, server, pump = iosim.connectedServerAndClient(
        lambda: PlainMaster(clock), amp.AMP
    )
    return client, server, pump


def roundTrips(pair: Callable[[], tuple], n: int, batch: int) -> float:
    """Seconds per KeepAlive round trip, C{batch} in flight, best of 5."""
    best = float("inf")
    deadline = time.perf_counter() + E2E_TIMEOUT / 4
    for _ in range(5):
        client, server, pump = pair()
        answered = [0]

        def count(_: object) -> None:
            answered[0] += 1

        started = time.perf_counter()
        for _ in range(n // batch):
            for _ in range(batch):
                client.callRemote(KeepAlive).addCallback(count)
            pump.flush()
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - started
        if answered[0] == 0:
            raise RuntimeError("no keep-alive answered in memory")
        best = min(best, elapsed / answered[0])
        if time.perf_counter() > deadline:
            break
    return best


def endToEnd(n: int, results: Results) -> float:
    """Adds the figures; returns the sealing overhead per round trip, 100 in flight."""
    extra = 0.0
    for batch in (1, 100):
        tPlain = roundTrips(plainPair, n, batch)
        tSealed = roundTrips(sealedPair, n, batch)
        results.add(f"in-memory round trip, {batch:>3} in flight: plain AMP", f"{tPlain * 1e6:.1f} us")
        results.add(f"in-memory round trip, {batch:>3} in flight: sealed", f"{tSealed * 1e6:.1f} us"
                    f"  (ratio {tSealed / tPlain:.2f}x, +{(tSealed - tPlain) * 1e6:.1f} us)")
        extra = tSealed - tPlain
    return extra


# ---------------------------------------------------------------------------


async def main(reactor: Any, args: argparse.Namespace) -> None:
    results = Results()
    results.section("Machine")
    results.add("python", f"{platform.python_implementation()} {platform.python_version()}")
    results.add("nproc", str(os.cpu_count()))
    results.add("platform", platform.platform())
    import cryptography
    import OpenSSL
    import twisted

    results.add(
        "twisted / cryptography / pyOpenSSL",
        f"{twisted.__version__} / {cryptography.__version__} / {OpenSSL.__version__}",
    )
    results.add("reactor", type(reactor).__name__)
    load = os.getloadavg()
    results.add("load average at start", " / ".join(f"{v:.2f}" for v in load))
    if load[0] > 1.0:
        results.notes.append(
            f"the machine was busy at start (load {load[0]:.2f} on {os.cpu_count()} cores):"
            " wall times and rates suffer first; CPU-per-operation figures much less"
        )

    sizes = [int(s) for s in args.sizes.split(",")]
    profileTo = None
    if args.profile:
        profileTo = os.path.join(tempfile.gettempdir(), f"wazuhcluster-bench-{os.getpid()}.prof")
    master = Master(profileTo)
    protocols: list[MasterConnection] = []
    try:
        started = time.perf_counter()
        master.start()
        master.waitReady()
        results.section("1. Handshake (TLS + key proof + Hello) of N workers, real master")
        results.add("master", f"pid {master.pid}, 127.0.0.1:{master.port}, ready in"
                    f" {time.perf_counter() - started:.2f}s")
        master.backlog = listenBacklog(master.port)
        results.add("master listen backlog", f"{master.backlog}  (somaxconn "
                    f"{open('/proc/sys/net/core/somaxconn').read().strip()})")
        tls = makeTLS(max(sizes))
        root = rootKey(master.key)
        for i, n in enumerate(sizes):
            protocols = await joinRound(reactor, master, n, root, tls, results)
            if i < len(sizes) - 1:
                await disconnectAll(reactor, master, protocols)
                protocols = []

        results.section(f"2. Keep-alives to the real master ({len(protocols)} workers)")
        masterPerKeepAlive = await keepAlivePhase(reactor, master, protocols, args, results)
        dropped = master.logCount("Dropping connection")
        if dropped:
            results.notes.append(f"the master dropped {dropped} connections: see its log")
        await disconnectAll(reactor, master, protocols)
        protocols = []
    finally:
        for p in protocols:
            if p.transport is not None:
                p.transport.abortConnection()
        master.stop()
        if profileTo and os.path.exists(profileTo):
            os.unlink(profileTo)

    results.section("3a. Sealing cost per message, in process")
    microbench(args.micro, results)
    results.section("3b. KeepAlive round trips in memory (iosim, no TLS): sealed vs plain AMP")
    sealingPerRoundTrip = endToEnd(args.e2e, results)
    results.section("Derived")
    perSide = sealingPerRoundTrip / 2
    results.add(
        "sealing share of master CPU per keep-alive (est.)",
        f"{perSide * 1e6:.1f} us of {masterPerKeepAlive * 1e6:.0f} us = "
        f"{perSide / masterPerKeepAlive * 100:.0f}%  (half the 3b sealed-plain gap,"
        " 100 in flight, over the master CPU of section 2)",
    )

    print("\n\nSUMMARY (wazuhcluster bench/connect.py)")
    print(results.table())
    for note in results.notes:
        print(f"NOTE: {note}")


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,100", help="worker counts, in order")
    parser.add_argument("--keepalives", type=int, default=20000, help="keep-alives measured")
    parser.add_argument("--window", type=int, default=1, help="keep-alives in flight per worker")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the keep-alive measure")
    parser.add_argument("--micro", type=int, default=20000, help="iterations of 3a")
    parser.add_argument("--e2e", type=int, default=10000, help="round trips of 3b")
    parser.add_argument(
        "--profile", action="store_true",
        help="after the measured keep-alives, cProfile the master over more of them",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if not sizes or min(sizes) < 1 or max(sizes) > 500:
        parser.error("--sizes: worker counts from 1 to 500")
    if not 1 <= args.keepalives <= 200_000 or not 1 <= args.window <= 16:
        parser.error("--keepalives up to 200000, --window from 1 to 16")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat from 1 to 10")
    args.micro = max(100, min(args.micro, 200_000))
    args.e2e = max(100, min(args.e2e, 50_000))
    return args


def run() -> None:
    args = parseArguments()
    # Warnings and errors of the worker side to stderr; debug lines dropped
    # as the daemon does (they still cost their Logger call, as there).
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, args)))


if __name__ == "__main__":
    run()
