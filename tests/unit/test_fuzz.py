"""
Fuzz tests of every decoder that reads bytes from a peer (or text from an
operator's file), with hypothesis.

What each decoder may do with any input is written in its docstring; these
tests hold it to that: raise only its documented error, never hang, never
allocate without bound, never write outside where it may, and leave nothing
behind when it refuses.  Covered:

 - L{wazuhcluster.protocol.sealed.decodeBox}, and L{SealedAMP} connections
   (master and worker ends, over real in-memory TLS on a L{Clock}) fed
   garbage before and after sealing;
 - L{wazuhcluster.protocol.sealing.Opener} with random and damaged messages;
 - L{wazuhcluster.sync.bundle.BundleReader} with the real synchronisation
   table's path policy, on valid bundles from L{BundleWriter} then mutated
   (bit flips, cuts, insertions, re-chunking), random bytes and compressed
   random records (bombs included);
 - L{wazuhcluster.master.agentinfo.StatusInbox} behind a
   L{BundleReader}, then the master applying what it kept;
 - L{wazuhcluster.sync.manifest.ManifestDecoder},
   L{wazuhcluster.sync.transfer.PathListSink} and C{jsonObject};
 - L{wazuhcluster.agents.clientkeys.parseClientKeys};
 - L{wazuhcluster.config} and L{wazuhcluster.internal_options} on any text;
 - L{wazuhcluster.api.filters}: the list parameters and the C{q} language with any query.

Time is bounded: every property runs a modest number of examples (the whole
module takes well under a minute on two cores), with no deadline per example
and no example database written anywhere (C{database=None}).  Examples are
random on every run (C{derandomize=False}); when one fails, hypothesis prints
the smallest failing example and a C{@reproduce_failure(...)} line to replay
it (C{print_blob=True}).

For a longer local run, raise the number of examples with the environment
variable C{WAZUHCLUSTER_FUZZ_EXAMPLES} (default 75; each property runs that
many times its own weight)::

    WAZUHCLUSTER_FUZZ_EXAMPLES=2000 python -m twisted.trial tests.unit.test_fuzz

Bugs these tests found are kept at the end as minimal examples (all fixed
now).  A bug found before its fix is marked with L{todo}: C{todo} under
trial and C{xfail(strict=True)} under pytest, so that both notice the fix.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import struct
import sys
import tempfile
import zlib
from typing import Any, Callable

#: Whether pytest runs these tests (it sets PYTEST_VERSION from 8.2 on, which
#: a subprocess inherits: so it must also have been imported already, by itself).
UNDER_PYTEST = "PYTEST_VERSION" in os.environ and "_pytest.config" in sys.modules

import pytest  # noqa: E402
from hypothesis import HealthCheck, event, given, settings, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certs import selfSigned
from tests.support.memorynet import MasterHarness, MemoryNetwork, settings as linkSettings
from tests.unit.test_sync_bundle import deleteRecord, endRecord, fileRecord, pieces
from wazuhcluster.agents.agentinfo import AGENT_INFO_FOLDER, MAX_STATUS_SIZE, parseStatusFileName
from wazuhcluster.agents.clientkeys import AgentKey, ClientKeys, LineKind, ipProblem, parseClientKeys
from wazuhcluster.api.envelope import ApiError
from wazuhcluster.api.filters import LIST_PARAMETERS, ListQuery, checkParameters, parseQuery
from wazuhcluster.config import ConfigError, load_cluster_config, parse_cluster_config, read_config_text
from wazuhcluster.home import WazuhHome
from wazuhcluster.internal_options import (
    InternalOptions,
    InternalOptionsError,
    load_internal_options,
    parse_internal_options,
)
from wazuhcluster.protocol import agentcommands, mastercommands, nodeinfo, stream, workercommands
from wazuhcluster.protocol.sealed import MAX_KEYS_PER_BOX, SEALED_KEY, ProtocolViolation, decodeBox
from wazuhcluster.protocol.sealing import SEAL_OVERHEAD, SealingError, rootKey, sealersFor
from wazuhcluster.worker.connection import MasterConnectionFactory
from wazuhcluster.protocol.workercommands import KeepAlive
from wazuhcluster.sync import bundle as bundleModule
from wazuhcluster.sync.bundle import BundleError, BundleReader, BundleWriter, Limits
from wazuhcluster.sync.manifest import FileEntry, ManifestDecoder, ManifestError, encodeManifest
from wazuhcluster.master.agentinfo import AGENT_INFO_LIMITS, MasterAgentInfo, StatusInbox
from wazuhcluster.sync.stager import TEMPORARY_PREFIX, Stager, StagingError
from wazuhcluster.sync.table import SyncTable, UnsafePath
from wazuhcluster.sync.transfer import PathListSink, jsonObject, pathLines

# ---------------------------------------------------------------------------
# Bounded, reproducible-on-failure settings.


def _baseExamples() -> int:
    text = os.environ.get("WAZUHCLUSTER_FUZZ_EXAMPLES", "").strip()
    if not text:
        return 75
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"WAZUHCLUSTER_FUZZ_EXAMPLES must be a whole number, not {text!r}") from None
    return max(1, value)


#: Examples of a property of weight 1.
EXAMPLES = _baseExamples()

settings.register_profile(
    "wazuhcluster-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
#: The profile, applied per test (never loaded globally: other modules keep theirs).
FUZZ = settings.get_profile("wazuhcluster-fuzz")


def fuzz(weight: float = 1.0) -> Callable[[Any], Any]:
    """
    The fuzz profile, with C{weight} times the base number of examples.

    Hypothesis attaches the failing example and its C{@reproduce_failure}
    line to the exception as notes, which pytest shows and trial does not:
    under trial they are printed to stderr.
    """
    chosen = settings(FUZZ, max_examples=max(1, round(EXAMPLES * weight)))

    def decorate(test: Any) -> Any:
        test = chosen(test)

        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return test(*args, **kwargs)
            except BaseException as e:
                if not UNDER_PYTEST:
                    failures = e.exceptions if isinstance(e, BaseExceptionGroup) else (e,)
                    for failure in failures:
                        notes = getattr(failure, "__notes__", ())
                        print(f"\n{type(args[0]).__name__}.{run.__name__}: {failure!r}", *notes, sep="\n", file=sys.stderr)
                raise

        return run

    return decorate


def todo(reason: str) -> Callable[[Any], Any]:
    """
    A known bug: an expected failure, C{xfail(strict=True)} under pytest and
    C{todo} under trial, so that a fix is reported by both (pytest fails the
    run; trial reports an unexpected success).  Not both at once: pytest runs
    trial test cases through trial, whose C{todo} would hide a strict xfail.
    """

    def mark(method: Any) -> Any:
        if not UNDER_PYTEST:
            method.todo = reason
        return pytest.mark.xfail(strict=True, reason=reason)(method)

    return mark


# ---------------------------------------------------------------------------
# Shared strategies and helpers.


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """C{data} cut at the given sizes (the last repeated), at least one piece."""
    return list(pieces(data, sizes or [max(len(data), 1)])) or [b""]


splits = st.lists(st.integers(1, 700), max_size=12)


@st.composite
def mutated(draw: Any, data: bytes, maxOps: int = 4) -> bytes:
    """C{data} after a few random edits (possibly none)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, maxOps))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "replace", "duplicate"]))
        at = draw(st.integers(0, max(len(out), 1) - 1)) if out else 0
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del out[draw(st.integers(0, len(out))) :]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif op == "delete" and out:
            del out[at : at + draw(st.integers(1, 40))]
        elif op == "replace" and out:
            chunk = draw(st.binary(min_size=1, max_size=40))
            out[at : at + len(chunk)] = chunk
        elif op == "duplicate" and out:
            out[at:at] = out[at : at + draw(st.integers(1, 200))]
    return bytes(out)


def treeSnapshot(root: str) -> dict[str, tuple[str, Any]]:
    """
    Everything under C{root}: each entry's kind and content (a file's bytes and
    mode, a symbolic link's target, a folder's mode), by relative path.
    """
    state: dict[str, tuple[str, Any]] = {}
    for folder, folders, names in os.walk(root):
        for name in folders + names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                state[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                state[relative] = ("folder", stat.S_IMODE(st_.st_mode))
            else:
                with open(path, "rb") as f:
                    state[relative] = ("file", (f.read(), stat.S_IMODE(st_.st_mode)))
    return state


class LogEvents:
    """The log events emitted while a test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def clear(self) -> None:
        del self.events[:]

    def lines(self, minimum: LogLevel = LogLevel.warn) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level", LogLevel.info) >= minimum]


# ---------------------------------------------------------------------------
# decodeBox


def serialiseRaw(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Boxes as AMP puts them on the wire, without AMP's own checks (any key length)."""
    out = bytearray()
    for key, value in pairs:
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    return bytes(out + b"\x00\x00")


ampKeys = st.binary(min_size=1, max_size=255)
ampBoxes = st.dictionaries(ampKeys, st.binary(max_size=600), max_size=MAX_KEYS_PER_BOX)


class DecodeBoxFuzz(SynchronousTestCase):
    """decodeBox: exactly one well-formed box, or ProtocolViolation."""

    def check(self, data: bytes) -> amp.AmpBox | None:
        try:
            box = decodeBox(data)
        except ProtocolViolation:
            return None
        self.assertLessEqual(len(box), MAX_KEYS_PER_BOX)
        self.assertIsInstance(box, amp.AmpBox)
        # Strict: what was accepted is exactly one box, in AMP's own form.
        self.assertEqual(serialiseRaw(list(box.items())), data)
        return box

    @fuzz(6)
    @given(st.binary(max_size=2000))
    def test_anyBytes(self, data: bytes) -> None:
        self.check(data)

    @fuzz(2)
    @given(ampBoxes)
    def test_roundTripsAmpSerialisation(self, values: dict[bytes, bytes]) -> None:
        box = amp.AmpBox(values)
        self.assertEqual(decodeBox(box.serialize()), box)

    @fuzz(4)
    @given(st.data())
    def test_mutatedBoxes(self, data: st.DataObject) -> None:
        box = amp.AmpBox(data.draw(ampBoxes))
        wire = data.draw(mutated(box.serialize()))
        self.check(wire)

    @fuzz(0.5)
    @given(st.integers(MAX_KEYS_PER_BOX + 1, 3 * MAX_KEYS_PER_BOX))
    def test_tooManyKeys(self, count: int) -> None:
        wire = amp.AmpBox({b"k%d" % i: b"" for i in range(count)}).serialize()
        self.assertRaises(ProtocolViolation, decodeBox, wire)


# ---------------------------------------------------------------------------
# Sealing


def sealingPair(binding: bytes = b"binding"):
    root = rootKey("c98b62a9b6169ac5f67dae55ae4a9088")
    nonces = (b"w" * 32, b"m" * 32)
    return sealersFor("worker", root, *nonces, binding), sealersFor("master", root, *nonces, binding)


class SealingFuzz(SynchronousTestCase):
    """An opener takes exactly the next authentic message; anything else is a SealingError."""

    @fuzz(3)
    @given(st.binary(max_size=400), st.integers(0, 3))
    def test_garbage(self, data: bytes, opened: int) -> None:
        (workerOut, _), (_, masterIn) = sealingPair()
        for n in range(opened):
            masterIn.open(workerOut.seal(b"%d" % n))
        self.assertRaises(SealingError, masterIn.open, data)
        # The garbage changed nothing: the next real message still opens.
        self.assertEqual(masterIn.open(workerOut.seal(b"next")), b"next")

    @fuzz(3)
    @given(st.binary(max_size=300), st.data())
    def test_bitFlipAlwaysRejected(self, plaintext: bytes, data: st.DataObject) -> None:
        (workerOut, _), (_, masterIn) = sealingPair()
        sealed = workerOut.seal(plaintext)
        self.assertEqual(len(sealed), len(plaintext) + SEAL_OVERHEAD)
        position = data.draw(st.integers(0, len(sealed) - 1))
        damaged = bytearray(sealed)
        damaged[position] ^= 1 << data.draw(st.integers(0, 7))
        self.assertRaises(SealingError, masterIn.open, bytes(damaged))
        self.assertEqual(masterIn.open(sealed), plaintext)

    @fuzz(3)
    @given(st.binary(max_size=300), st.data())
    def test_mutatedRejectedUnlessIntact(self, plaintext: bytes, data: st.DataObject) -> None:
        (workerOut, _), (_, masterIn) = sealingPair()
        sealed = workerOut.seal(plaintext)
        damaged = data.draw(mutated(sealed))
        if damaged == sealed:
            self.assertEqual(masterIn.open(damaged), plaintext)
        else:
            self.assertRaises(SealingError, masterIn.open, damaged)
            self.assertEqual(masterIn.open(sealed), plaintext)

    @fuzz(1)
    @given(st.binary(max_size=100))
    def test_otherDirectionAndConnection(self, plaintext: bytes) -> None:
        (workerOut, workerIn), _ = sealingPair()
        _, (_, otherIn) = sealingPair(binding=b"another connection")
        sealed = workerOut.seal(plaintext)
        self.assertRaises(SealingError, workerIn.open, sealed)
        self.assertRaises(SealingError, otherIn.open, sealed)


# ---------------------------------------------------------------------------
# SealedAMP connections fed garbage


def _commandNames() -> list[bytes]:
    names = set()
    for module in (workercommands, mastercommands, agentcommands, nodeinfo, stream):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, amp.Command) and value is not amp.Command:
                names.add(value.commandName)
    return sorted(names)


COMMAND_NAMES = _commandNames()

wireKeys = st.one_of(
    st.sampled_from(
        [
            amp.COMMAND,
            amp.ASK,
            amp.ANSWER,
            amp.ERROR,
            amp.ERROR_CODE,
            amp.ERROR_DESCRIPTION,
            SEALED_KEY,
            b"worker_nonce",
            b"master_nonce",
            b"proof",
            b"cluster_name",
            b"node_name",
            b"node_type",
            b"version",
            b"stream_id",
            b"data",
        ]
    ),
    st.binary(min_size=1, max_size=8),
    st.binary(min_size=250, max_size=300),  # over AMP's 255-byte keys
)
wireValues = st.one_of(
    st.sampled_from(COMMAND_NAMES),
    st.sampled_from([b"1", b"2", b"wazuh", b"node02", b"worker", b"4.9.0"]),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=60),
    st.binary(min_size=24, max_size=200),
)
wireBoxes = st.lists(st.tuples(wireKeys, wireValues), max_size=8).map(serialiseRaw)
wireBytes = st.one_of(
    st.binary(max_size=400),
    st.lists(wireBoxes, min_size=1, max_size=4).map(b"".join),
    st.lists(wireBoxes, min_size=1, max_size=3).map(b"".join).flatmap(mutated),
)


def ignoreFailure(d: Deferred) -> Deferred:
    """Consume a Deferred's failure, so that none is logged when it is collected."""
    d.addErrback(lambda f: None)
    return d


class ConnectionFuzz(SynchronousTestCase):
    """
    A master with one joined worker; garbage arrives on another connection,
    or on the worker's own, before or after sealing.
    """

    def setUp(self) -> None:
        self.logs = LogEvents(self)
        for name in ("stranger", "node02", "master-node", "impostor"):
            selfSigned(name)  # cached: made once, outside the timed examples

    def joined(self) -> tuple[Clock, MemoryNetwork, MasterHarness, Any]:
        clock = Clock()
        net = MemoryNetwork(clock)
        master = MasterHarness(clock)
        connection, joined = net.joinWorker(master, linkSettings("node02"))
        self.successResultOf(joined)
        return clock, net, master, connection

    def send(self, net: MemoryNetwork, transport: Any, wire: bytes, sizes: list[int]) -> BaseException | None:
        """Write C{wire} in pieces, pumping after each; what escaped, if anything."""
        try:
            for piece in chunked(wire, sizes):
                transport.write(piece)
                net.flush()
        except Exception as e:
            return e
        return None

    def assertWorkerAnswered(self, clock: Clock, net: MemoryNetwork, master: MasterHarness, connection: Any) -> None:
        clock.advance(1)
        answered = connection.client.callRemote(KeepAlive)
        net.flush()
        self.successResultOf(answered)
        self.assertEqual(connection.server.lastKeepAlive, clock.seconds())
        self.assertIs(master.fleet.workers.get("node02"), connection.server)

    def finish(self) -> None:
        # AMP's own "unhandled error" (a command with missing or bad arguments)
        # is a logged failure: a drop with a log line, which is allowed here.
        self.flushLoggedErrors()
        self.logs.clear()

    @fuzz(2)
    @given(wireBytes, splits)
    def test_strangerBeforeSealing(self, wire: bytes, sizes: list[int]) -> None:
        """
        Garbage from a peer that never proved the key: it is dropped with a
        log line now, or closed with one when its handshake time is up; the
        joined worker keeps working throughout.
        """
        clock, net, master, worker = self.joined()
        stranger = net.connectStranger(master, Factory.forProtocol(Protocol))
        self.logs.clear()
        try:
            escaped = self.send(net, stranger.client.transport, wire, sizes)
            if escaped is not None:
                raise escaped
            if stranger.serverTLS.transport.disconnecting:
                event("stranger dropped at once")
            else:
                event("stranger closed when its handshake time was up")
                clock.advance(master.settings.options.handshake_timeout + 0.1)
                net.flush()
            self.assertTrue(stranger.serverTLS.transport.disconnecting, "the stranger was never dropped")
            self.assertEqual(list(master.fleet.workers), ["node02"])
            # One that said nothing (a health check) is closed at debug level.
            level = LogLevel.warn if wire else LogLevel.debug
            self.assertTrue(self.logs.lines(level), "the stranger was dropped without a log line")
            self.assertWorkerAnswered(clock, net, master, worker)
        finally:
            self.finish()

    @fuzz(2)
    @given(wireBytes, splits, st.booleans())
    def test_garbageAfterSealing(self, wire: bytes, sizes: list[int], towardsMaster: bool) -> None:
        """
        Garbage inside a sealed link, either way: the receiving end drops
        its peer with a log line, or keeps working, or (stuck in the middle
        of a box) is dropped with a log line by the keep-alive check.
        """
        clock, net, master, connection = self.joined()
        self.logs.clear()
        tls = connection.clientTLS if towardsMaster else connection.serverTLS
        receiver = connection.server if towardsMaster else connection.client
        try:
            escaped = self.send(net, tls, wire, sizes)
            if escaped is not None:
                raise escaped
            clock.advance(1)
            answered = ignoreFailure(connection.client.callRemote(KeepAlive))
            net.flush()
            dropped = receiver.transport is None or receiver.transport.disconnecting or receiver._dropped
            if not dropped and answered.called:
                event("keeps working")
                return
            event("dropped at once" if dropped else "stuck")
            if towardsMaster and not dropped:
                # Stuck in the middle of a box: the keep-alive check drops the worker.
                clock.advance(master.settings.options.max_allowed_time_without_keepalive + 1)
                master.fleet.dropSilentWorkers()
                net.flush()
                self.assertTrue(connection.serverTLS.transport.disconnecting, "a stuck worker was never dropped")
                self.assertNotIn("node02", master.fleet.workers)
                self.assertTrue(self.logs.lines(), "a stuck worker was dropped without a log line")
            if dropped:
                self.assertTrue(self.logs.lines(), "the peer was dropped without a log line")
        finally:
            self.finish()

    @fuzz(1.5)
    @given(wireBytes, splits)
    def test_impostorMasterBeforeSealing(self, wire: bytes, sizes: list[int]) -> None:
        """
        A worker joining something that is not a master and answers garbage:
        nothing escapes, and the join never succeeds.
        """
        clock = Clock()
        net = MemoryNetwork(clock)
        worker = linkSettings("node02")
        connection = net.connect(
            Factory.forProtocol(Protocol), selfSigned("impostor"), MasterConnectionFactory(worker, clock), worker.tls
        )
        net.flush()
        joined = Deferred.fromCoroutine(connection.client.join())
        try:
            net.flush()
            escaped = self.send(net, connection.serverTLS, wire, sizes)
            if escaped is not None:
                raise escaped
            self.assertFalse(connection.client.joined)
            if connection.clientTLS.transport.disconnecting:
                self.assertTrue(self.logs.lines() or joined.called, "the impostor was dropped without a log line")
        finally:
            ignoreFailure(joined)
            self.finish()


# ---------------------------------------------------------------------------
# BundleReader with the real synchronisation table


TABLE = SyncTable.load()

#: Small limits, so that bombs and long streams reach them fast.
SMALL_LIMITS = Limits(maxFileSize=16 * 1024, maxTotalBytes=64 * 1024, maxRecords=8, maxPathBytes=160)

BUNDLE_PATHS = [
    # Synchronised.
    "etc/shared/default/agent.conf",
    "etc/shared/new-group/merged.mg",
    "etc/lists/list1",
    "etc/lists/sub/deep/list2",
    "etc/rules/local.xml",
    "etc/client.keys",
    "queue/agent-groups/001",
    "var/multigroups/abc/merged.mg",
    # Refused by the policy, or in the way of something.
    "etc/ossec.conf",
    "etc/lists/x.tmp",
    "../outside/secret",
    "etc/lists/../../../outside/secret",
    "/etc/passwd",
    "etc/lists/escape/pwned",
    "etc/lists/escape",
    "etc/decoders/pwned",
    "etc/rules/linked.xml",
    "etc/lists/list1/below-a-file",
    "etc/shared",
    "etc/shared/default",
    "etc/lists/" + TEMPORARY_PREFIX + "0123456789abcdef.tmp",
    "etc/lists/a\\b",
    "etc/lists/./x",
    "etc//lists/x",
    "etc/lists/x\nforged log line",
    "etc/lists/" + "n" * 300,
]


def makeWorkerHome(base: str) -> str:
    """
    A worker's home in C{base}/home, with a C{base}/outside that nothing may
    touch, and symbolic links that lead there from inside the home.
    """
    home = os.path.join(base, "home")
    outside = os.path.join(base, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "secret"), "wb") as f:
        f.write(b"secret")
    files = {
        "etc/ossec.conf": b"<ossec_config/>",
        "etc/client.keys": b"001 a any " + b"0" * 64 + b"\n",
        "etc/shared/default/agent.conf": b"old agent.conf",
        "etc/lists/list1": b"old list",
        "etc/rules/local.xml": b"<group/>",
    }
    for relpath, data in files.items():
        path = os.path.join(home, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(home, "queue", "agent-groups"))
    os.symlink("../../../outside", os.path.join(home, "etc", "lists", "escape"))
    os.symlink("../../outside", os.path.join(home, "etc", "decoders"))
    os.symlink("../../../outside/secret", os.path.join(home, "etc", "rules", "linked.xml"))
    return home


def tableResolve(home: str) -> Callable[[str], tuple[str, int, str | None]]:
    """The worker's path policy (as WorkerIntegrity.resolve)."""

    def resolve(relpath: str) -> tuple[str, int, str | None]:
        target, rule = TABLE.resolve(home, relpath)
        return target, rule.mode, os.path.join(home, rule.folder) if rule.prune_empty_folders else None

    return resolve


bundlePath = st.one_of(
    st.sampled_from(BUNDLE_PATHS),
    st.text(min_size=1, max_size=12).map(lambda t: "etc/lists/" + t),
    st.text(max_size=20),
)


@st.composite
def validBundleSpec(draw: Any) -> tuple[dict[str, bytes], list[str], int]:
    files = draw(
        st.dictionaries(
            bundlePath,
            st.one_of(st.binary(max_size=400), st.integers(0, 20_000).map(bytes)),
            max_size=4,
        )
    )
    deletions = draw(st.lists(bundlePath, max_size=3))
    chunkSize = draw(st.sampled_from([1, 7, 100, 4096, 32 * 1024]))
    return files, deletions, chunkSize


@st.composite
def rawRecords(draw: Any) -> bytes:
    """Records as a hostile master could write them: any field may lie."""
    out = []
    files = deletions = 0
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["F", "F", "D", "E", "raw", "bomb"]))
        path = draw(st.one_of(bundlePath.map(lambda p: p.encode("utf-8", "surrogatepass")), st.binary(max_size=20)))
        if kind == "F":
            content = draw(st.binary(max_size=300))
            size = draw(st.one_of(st.none(), st.integers(0, 2**64 - 1)))
            mtime = draw(st.one_of(st.just(1_700_000_000.25), st.floats()))
            digest = draw(st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
            out.append(fileRecord(path, content, mtime=mtime, size=size, digest=digest))
            files += 1
        elif kind == "D":
            out.append(deleteRecord(path))
            deletions += 1
        elif kind == "E":
            counts = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))))
            out.append(endRecord(*(counts or (files, deletions))))
        elif kind == "bomb":
            size = draw(st.integers(0, 1 << 20))
            out.append(fileRecord(path, bytes(size), digest=draw(st.one_of(st.none(), st.binary(min_size=16, max_size=16)))))
            files += 1
        else:
            out.append(draw(st.binary(max_size=40)))
    if draw(st.booleans()):
        out.append(endRecord(files, deletions))
    return b"".join(out)


class BundleFuzz(SynchronousTestCase):
    """
    A worker's BundleReader with the real table's policy, in a home that has
    symbolic links leading out of it.
    """

    def setUp(self) -> None:
        self.top = os.path.abspath(self.mktemp())
        os.makedirs(self.top)
        # Durability is not under test: one os.sync() per commit would make
        # the run depend on whatever else this machine is writing.
        self.patch(os, "sync", lambda: None)

    def run_bundle(self, data: list[bytes], limits: Limits = SMALL_LIMITS) -> None:
        """
        Feed C{data} (pieces of a compressed bundle) to a reader over a fresh
        home, and check what it did, whether it accepted the bundle or not.
        """
        base = tempfile.mkdtemp(dir=self.top)
        try:
            home = makeWorkerHome(base)
            before = treeSnapshot(base)
            # Bytes written to each file staged (by inode: files arrive
            # through begin/write/end or whole, through stageWhole).
            writtenTo: dict[tuple[int, int], int] = {}

            def countingWrite(fd: int, chunk: bytes | memoryview) -> int:
                count = os.write(fd, chunk)
                st = os.fstat(fd)
                writtenTo[st.st_dev, st.st_ino] = writtenTo.get((st.st_dev, st.st_ino), 0) + count
                return count

            written = writtenTo.values()
            stager = Stager(tableResolve(home), UnsafePath, writeBytes=countingWrite)
            reader = BundleReader(stager, limits)
            try:
                for piece in data:
                    reader.feed(piece)
                result = reader.finish()
            except (BundleError, StagingError):
                # The reader aborted the stager itself: nothing is left.
                self.assertEqual(treeSnapshot(base), before)
                self.assertLessEqual(reader.bytesOut, limits.maxTotalBytes + bundleModule._DECOMPRESS_STEP)
                self.assertLessEqual(sum(written), limits.maxTotalBytes)
                self.assertLessEqual(max(written, default=0), limits.maxFileSize)
                self.assertRaises(BundleError, reader.feed, b"x")
                stager.abort()
                self.assertEqual(treeSnapshot(base), before)
                event("refused")
                return
            event("accepted")
            self.assertLessEqual(result.bytesOut, limits.maxTotalBytes)
            self.assertLessEqual(len(result.files) + len(result.deletions) + len(result.refused), limits.maxRecords)
            self.assertLessEqual(sum(written), limits.maxTotalBytes)
            self.assertLessEqual(max(written, default=0), limits.maxFileSize)
            applied = stager.commit()
            self.checkOnlyAllowedChanges(base, home, before, applied)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def checkOnlyAllowedChanges(self, base: str, home: str, before: dict, applied: Any) -> None:
        after = treeSnapshot(base)
        outsideBefore = {p: v for p, v in before.items() if not p.startswith("home" + os.sep)}
        outsideAfter = {p: v for p, v in after.items() if not p.startswith("home" + os.sep)}
        self.assertEqual(outsideAfter, outsideBefore, "something outside the home changed")
        written = {os.path.join("home", os.path.normpath(p)) for p in applied.written}
        deleted = {os.path.join("home", os.path.normpath(p)) for p in applied.deleted}
        for path in set(before) | set(after):
            old, new = before.get(path), after.get(path)
            name = os.path.basename(path)
            self.assertFalse(name.startswith(TEMPORARY_PREFIX), f"temporary left: {path}")
            if old == new:
                continue
            if new is not None and new[0] == "file":
                self.assertIn(path, written, f"{path} changed but was not written")
                self.assertEqual(new[1][1], TABLE.validate(os.path.relpath(path, "home")).mode)
            elif old is not None and old[0] == "file":
                self.assertIn(path, deleted, f"{path} vanished but was not deleted")
            elif new is not None and new[0] == "folder":
                self.assertTrue(any(w.startswith(path + os.sep) for w in written), f"folder {path} made for nothing")
            elif old is not None and old[0] == "folder":
                self.assertIn(os.path.join(base, path), applied.pruned)
            else:  # a symbolic link changed
                self.fail(f"{path} changed from {old} to {new}")

    @fuzz(1.5)
    @given(validBundleSpec(), st.data())
    def test_writerBundlesMutated(self, spec: tuple[dict[str, bytes], list[str], int], data: st.DataObject) -> None:
        files, deletions, chunkSize = spec
        source = tempfile.mkdtemp(dir=self.top)
        try:
            pairs = []
            for index, (relpath, content) in enumerate(files.items()):
                path = os.path.join(source, str(index))
                with open(path, "wb") as f:
                    f.write(content)
                # A fixed time: the same example must make the same stream when replayed.
                os.utime(path, ns=(1_650_000_000_123_456_789, 1_650_000_000_123_456_789))
                pairs.append((relpath, path))
            stream = b"".join(BundleWriter(pairs, deletions, chunkSize=chunkSize).chunks())
        finally:
            shutil.rmtree(source, ignore_errors=True)
        damaged = data.draw(mutated(stream))
        self.run_bundle(chunked(damaged, data.draw(splits)))

    @fuzz(1.5)
    @given(rawRecords(), st.integers(0, 9), splits, st.booleans())
    def test_hostileRecords(self, raw: bytes, level: int, sizes: list[int], trailer: bool) -> None:
        compressed = zlib.compress(raw, level)
        if not trailer:
            compressed = compressed[:-4]
        self.run_bundle(chunked(compressed, sizes))

    @fuzz(1)
    @given(st.binary(max_size=3000), splits, st.booleans())
    def test_randomBytes(self, data: bytes, sizes: list[int], compress: bool) -> None:
        self.run_bundle(chunked(zlib.compress(data) if compress else data, sizes))

    @fuzz(0.3)
    @given(st.integers(1, 8), st.integers(0, 4))
    def test_bombs(self, megabytes: int, records: int) -> None:
        """Small inputs that inflate far past the limits are refused within a step of them."""
        compressor = zlib.compressobj(9)
        header = b"".join(deleteRecord(b"etc/lists/x") for _ in range(records))
        header += fileRecord(b"etc/lists/zeros", b"", size=megabytes << 20, digest=b"")
        parts = [compressor.compress(header)]
        block = bytes(1 << 20)
        for _ in range(megabytes):
            parts.append(compressor.compress(block))
        parts.append(compressor.flush())
        self.run_bundle([b"".join(parts)])


# ---------------------------------------------------------------------------
# Agent statuses (StatusInbox behind a BundleReader), then applied


statusName = st.one_of(
    st.builds(
        lambda name, ip: f"{name}-{ip}",
        st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
        st.one_of(st.just("any"), st.ip_addresses().map(str), st.sampled_from(["10.0.0.0/8", "::1"])),
    ),
    st.sampled_from(
        [
            "../../etc-10.0.0.1",
            "a/b-10.0.0.1",
            "..-any",
            ".-any",
            "-any",
            "agent-",
            "agent-10.0.0.0/8",
            "agent-300.1.1.1",
            "agent\n-10.0.0.1",
            TEMPORARY_PREFIX + "x-any",
            "agent-fe80::1%eth0",
            "agent-fe80::1%../../x",
        ]
    ),
    st.text(max_size=30),
)


class StatusInboxFuzz(SynchronousTestCase):
    """Only NAME-IP statuses are kept, and the master writes them only into queue/agent-info/."""

    def setUp(self) -> None:
        self.top = os.path.abspath(self.mktemp())
        os.makedirs(self.top)

    @fuzz(1.5)
    @given(
        st.lists(
            st.tuples(st.sampled_from("FFD"), statusName, st.binary(max_size=200), st.booleans()), max_size=6
        ),
        st.booleans(),
        st.data(),
    )
    def test_statuses(self, records: list[tuple[str, str, bytes, bool]], damage: bool, data: st.DataObject) -> None:
        raw = b""
        for kind, name, content, rightDigest in records:
            path = name.encode("utf-8", "surrogatepass")
            if kind == "F":
                raw += fileRecord(path, content, digest=None if rightDigest else b"\x00" * 16)
            else:
                raw += deleteRecord(path)
        raw += endRecord(sum(k == "F" for k, *_ in records), sum(k == "D" for k, *_ in records))
        compressed = zlib.compress(raw)
        if damage:
            compressed = data.draw(mutated(compressed))
        inbox = StatusInbox()
        reader = BundleReader(inbox, AGENT_INFO_LIMITS)
        try:
            for piece in chunked(compressed, data.draw(splits)):
                reader.feed(piece)
            reader.finish()
        except BundleError:
            self.assertEqual(inbox.statuses, [])
            event("refused")
            return
        event("accepted")
        self.assertEqual(inbox.deleting, ())
        for name, mtime, content in inbox.statuses:
            self.assertIsNotNone(parseStatusFileName(name), name)
            self.assertEqual(os.path.basename(name), name)
            self.assertNotIn(name, (".", ".."))
            self.assertLessEqual(len(content), MAX_STATUS_SIZE)
        refusedNames = {n for _, n, _, _ in records if parseStatusFileName(n) is None}
        self.assertFalse(refusedNames & {n for n, _, _ in inbox.statuses})
        self.applyAsMaster(inbox.statuses, {n for _, n, _, _ in records})

    def applyAsMaster(self, statuses: list[tuple[str, float, bytes]], allNames: set[str]) -> None:
        """The master takes the statuses, as if every name were registered: only queue/agent-info/ changes."""
        base = tempfile.mkdtemp(dir=self.top)
        try:
            home = os.path.join(base, "home")
            for folder in (AGENT_INFO_FOLDER, "queue/cluster", "etc"):
                os.makedirs(os.path.join(home, folder))
            before = treeSnapshot(base)
            master = MasterAgentInfo(WazuhHome(home), InternalOptions(), Clock(), "master", lambda c: True)
            master.registered.statusNames = lambda: {n: n for n in allNames}  # type: ignore[method-assign]
            master._applyBlocking("node02", statuses, 1_700_000_000.0)
            after = treeSnapshot(base)
            changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
            folder = os.path.join("home", AGENT_INFO_FOLDER)
            allowed = {os.path.join(folder, name) for name, _, _ in statuses}
            allowed.add(os.path.join("home", "queue", "cluster", "agent-nodes.json"))
            self.assertLessEqual(changed, allowed)
        finally:
            shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# Manifests, path lists and JSON answers


md5Text = st.text("0123456789abcdef", min_size=32, max_size=32)
manifestEntries = st.dictionaries(
    st.text(max_size=30),
    st.builds(FileEntry, md5Text, st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**63 - 1)),
    max_size=8,
)
jsonScalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
jsonValues = st.recursive(
    jsonScalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def manifestLines(draw: Any) -> bytes:
    """JSON lines close to a manifest's, often wrong in one field."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        item: Any
        if draw(st.integers(0, 3)):
            item = {
                "p": draw(st.one_of(st.sampled_from(["etc/a", "etc/b"]), st.text(max_size=20), jsonScalars)),
                "m": draw(st.one_of(md5Text, md5Text.map(str.upper), jsonScalars)),
                "t": draw(st.one_of(st.floats(), st.integers(), jsonScalars)),
                "s": draw(st.one_of(st.integers(), jsonScalars)),
            }
            if not draw(st.integers(0, 4)):
                del item[draw(st.sampled_from("pmts"))]
            if not draw(st.integers(0, 4)):
                item["x"] = 0
        else:
            item = draw(jsonValues)
        lines.append(json.dumps(item, allow_nan=True).encode("utf-8"))
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.binary(max_size=30)))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


class ManifestFuzz(SynchronousTestCase):
    def decode(self, data: bytes, sizes: list[int], maxEntries: int = 1_000_000, maxLine: int = 8192) -> dict | None:
        decoder = ManifestDecoder(maxEntries=maxEntries, maxLine=maxLine)
        try:
            for piece in chunked(data, sizes):
                decoder.feed(piece)
            entries = decoder.finish()
        except ManifestError:
            # Refused as a whole: nothing more is taken.
            self.assertRaises(ManifestError, decoder.feed, b"\n")
            self.assertRaises(ManifestError, decoder.finish)
            return None
        self.assertLessEqual(len(entries), maxEntries)
        for path, entry in entries.items():
            self.assertIsInstance(path, str)
            self.assertRegex(entry.md5, r"\A[0-9a-f]{32}\Z")
            self.assertGreaterEqual(entry.size, 0)
        return entries

    @fuzz(4)
    @given(st.binary(max_size=2000), splits, st.sampled_from([64, 8192]))
    def test_anyBytes(self, data: bytes, sizes: list[int], maxLine: int) -> None:
        self.decode(data, sizes, maxLine=maxLine)

    @fuzz(2)
    @given(manifestLines(), splits, st.integers(0, 4))
    def test_nearlyManifests(self, data: bytes, sizes: list[int], maxEntries: int) -> None:
        self.decode(data, sizes, maxEntries=maxEntries)

    @fuzz(2)
    @given(manifestEntries, splits)
    def test_roundTrip(self, files: dict[str, FileEntry], sizes: list[int]) -> None:
        data = b"".join(encodeManifest(files))
        self.assertEqual(self.decode(data, sizes), dict(files))


class TransferFuzz(SynchronousTestCase):
    @fuzz(3)
    @given(st.binary(max_size=20_000), st.lists(st.integers(1, 9000), max_size=8), st.integers(0, 50))
    def test_pathListSink(self, data: bytes, sizes: list[int], maxPaths: int) -> None:
        completed: list[list[str]] = []
        sink = PathListSink(completed.append, maxPaths=maxPaths)
        try:
            for piece in chunked(data, sizes):
                sink.feed(piece)
                self.assertLessEqual(len(sink.buffer), 8192)
            answer = sink.close()
        except ValueError:
            self.assertEqual(completed, [])
            return
        self.assertEqual(json.loads(answer), {"paths": len(completed[0])})
        self.assertLessEqual(len(completed[0]), maxPaths)
        self.assertEqual(completed[0], [line.decode("utf-8", "replace") for line in data.split(b"\n") if line])

    @fuzz(1)
    @given(
        st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n"), min_size=1, max_size=40), max_size=30),
        splits,
    )
    def test_pathLinesRoundTrip(self, paths: list[str], sizes: list[int]) -> None:
        completed: list[list[str]] = []
        sink = PathListSink(completed.append)
        for piece in chunked(b"".join(pathLines(paths, pieceSize=64)), sizes):
            sink.feed(piece)
        sink.close()
        self.assertEqual(completed, [paths])

    @fuzz(2)
    @given(st.one_of(st.text(max_size=200), jsonValues.map(json.dumps), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
    def test_jsonObject(self, text: str) -> None:
        try:
            value = jsonObject(text)
        except ValueError:
            return
        self.assertIsInstance(value, dict)


# ---------------------------------------------------------------------------
# client.keys


KEY64 = st.text("0123456789abcdefABCDEF", min_size=64, max_size=64)
keysField = st.one_of(
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.from_regex(r"!?[A-Za-z0-9._-]{1,12}", fullmatch=True),
    st.sampled_from(["any", "10.0.0.1", "10.0.0.0/8", "::1", "fe80::1%eth0", "000", "001", "#", "!"]),
    KEY64,
    st.text(max_size=10),
)
keysLine = st.one_of(
    st.lists(keysField, max_size=6).map(" ".join),
    st.text(max_size=40),
).map(lambda line: line.encode("utf-8", "surrogatepass"))
keysFile = st.one_of(
    st.binary(max_size=1500),
    st.lists(st.tuples(keysLine, st.sampled_from([b"\n", b"\r\n", b"\r", b""])), max_size=12).map(
        lambda lines: b"".join(line + end for line, end in lines)
    ),
)


class ClientKeysFuzz(SynchronousTestCase):
    @fuzz(3)
    @given(keysFile)
    def test_neverFailsAndKeepsEveryByte(self, data: bytes) -> None:
        keys = parseClientKeys(data)
        self.assertEqual(keys.serialise(), data)
        self.assertEqual(len(keys.warnings), sum(line.kind is LineKind.MALFORMED for line in keys.lines))
        ids = [agent.id for agent in keys.agents]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertNotIn("000", ids)
        # A new agent gets an ID above every ID a line held.
        nextID = int(keys.nextID())
        self.assertTrue(all(line.seenID < nextID for line in keys.lines if line.seenID is not None))

    @fuzz(1.5)
    @given(
        keysFile,
        st.from_regex(r"[A-Za-z0-9._-]{1,128}", fullmatch=True),
        st.one_of(
            st.just("any"),
            st.ip_addresses().map(str),
            st.ip_addresses().flatmap(lambda a: st.integers(0, a.max_prefixlen).map(lambda n: f"{a}/{n}")),
        ),
        KEY64,
    )
    def test_addedAgentReadsBack(self, data: bytes, name: str, ip: str, key: str) -> None:
        keys = parseClientKeys(data)
        agent = AgentKey(keys.nextID(), name, ip, key)
        again = parseClientKeys(keys.withAgent(agent).serialise())
        self.assertIn(agent, again.agents)
        self.assertEqual(again.agents[:-1], keys.agents)
        removed = parseClientKeys(again.withoutAgent(agent.id).serialise())
        self.assertEqual(removed.agents, keys.agents)
        self.assertIn(agent, removed.removedAgents)


# ---------------------------------------------------------------------------
# Configuration files


XML_PIECES = [
    "<ossec_config>",
    "</ossec_config>",
    "<cluster>",
    "</cluster>",
    "<nodes>",
    "</nodes>",
    "<node>",
    "</node>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "&",
    "&amp;",
    "&#0;",
    "&#x41;",
    "&#99999999999;",
    "&foo;",
    "<",
    "\\<",
    "<?xml version='1.0'?>",
    "\ufeff",
    "<!DOCTYPE x [<!ENTITY e 'eee'>]>",
    "\r\n",
    "\n",
    "wazuh",
    "node01",
    "master",
    "worker",
    "client",
    "yes",
    "no",
    "1516",
    "10.0.0.1",
    "c98b62a9b6169ac5f67dae55ae4a9088",
]
OPTION_TAGS = [
    "name", "node_name", "key", "node_type", "port", "bind_addr", "hidden", "disabled",
    "ca_cert", "node_cert", "node_key", "interval", "unknown",
]


VALID_OPTIONS = {
    "name": "wazuh",
    "node_name": "node01",
    "key": "c98b62a9b6169ac5f67dae55ae4a9088",
    "node_type": "master",
    "port": "1516",
    "bind_addr": "0.0.0.0",
    "hidden": "no",
    "disabled": "no",
}


#: Text XML takes as it is, and any text.
xmlSafeText = st.text(st.characters(min_codepoint=32, max_codepoint=0x17F, exclude_characters="<&"), max_size=12)
optionValue = st.one_of(xmlSafeText, xmlSafeText, xmlSafeText, st.sampled_from(XML_PIECES), st.text(max_size=12))


@st.composite
def clusterSection(draw: Any) -> str:
    """A <cluster> section, valid at first, then with options dropped, changed or added."""
    options = dict(VALID_OPTIONS)
    for tag in list(options):
        choice = draw(st.sampled_from(["keep"] * 8 + ["drop", "change"]))
        if choice == "drop":
            del options[tag]
        elif choice == "change":
            options[tag] = draw(optionValue)
    parts = ["<cluster>"]
    parts += [f"<{tag}>{value}</{tag}>" for tag, value in options.items()]
    for tag in draw(st.lists(st.sampled_from(OPTION_TAGS), max_size=2)):
        parts.append(f"<{tag}>{draw(optionValue)}</{tag}>")
    if draw(st.integers(0, 3)):
        nodes = draw(
            st.lists(
                st.one_of(
                    st.sampled_from(["10.0.0.1", "master.example", "::1", "a_b-c.d"]),
                    st.sampled_from(["10.0.0.1", "master.example", "::1", "a_b-c.d"]),
                    st.sampled_from(["NODE_IP", "", "1.2.3", "0.0.0.0", "-x.y", "a..b"]),
                    optionValue,
                ),
                min_size=1,
                max_size=3,
            )
        )
        parts.append("<nodes>" + "".join(f"<node>{n}</node>" for n in nodes) + "</nodes>")
    return "<cluster>" + "".join(draw(st.permutations(parts[1:]))) + "</cluster>"


def _oneOptionChanged(tag: str, value: str | None) -> str:
    options = {**VALID_OPTIONS, "nodes": "<node>10.0.0.1</node>"}
    if value is None:
        del options[tag]
    else:
        options[tag] = value
    body = "".join(f"<{t}>{v}</{t}>" for t, v in options.items())
    return f"<ossec_config><cluster>{body}</cluster></ossec_config>"


configText = st.one_of(
    st.builds(_oneOptionChanged, st.sampled_from([*VALID_OPTIONS, "nodes"]), st.one_of(st.none(), optionValue)),
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(XML_PIECES), st.text(max_size=8)), max_size=30).map("".join),
    st.lists(clusterSection(), min_size=1, max_size=2).map(lambda s: "<ossec_config>" + "".join(s) + "</ossec_config>"),
    st.lists(clusterSection(), min_size=1, max_size=2).flatmap(
        lambda s: st.lists(st.one_of(st.sampled_from(XML_PIECES), st.just("".join(s))), max_size=6).map("".join)
    ),
)


class ConfigFuzz(SynchronousTestCase):
    def parse(self, text: str) -> None:
        try:
            config, warnings = parse_cluster_config(text, "ossec.conf")
        except ConfigError as e:
            self.assertNotIn("\n", str(e), "a configuration error is one line")
            self.assertTrue(str(e).startswith("ossec.conf"))
            event(f"refused: {type(e).__name__}")
            return
        self.assertIsInstance(warnings, list)
        event("accepted, disabled" if config.disabled else "accepted")
        if not config.disabled:
            self.assertIn(config.node_type, ("master", "worker"))
            self.assertTrue(1025 <= config.port <= 65535)
            self.assertTrue(config.nodes)

    @fuzz(3)
    @given(configText)
    def test_anyText(self, text: str) -> None:
        self.parse(text)

    @fuzz(1)
    @given(st.binary(max_size=600))
    def test_loadAnyBytes(self, data: bytes) -> None:
        folder = tempfile.mkdtemp()
        try:
            path = os.path.join(folder, "ossec.conf")
            with open(path, "wb") as f:
                f.write(data)
            try:
                load_cluster_config(path)
            except ConfigError:
                pass
            try:
                text = read_config_text(path, "configuration file", ConfigError)
            except ConfigError as e:
                self.assertRaises(UnicodeDecodeError, data.decode, "utf-8")
                self.assertTrue(str(e).startswith(path))
            else:
                self.assertEqual(text, data.decode("utf-8"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @fuzz(2)
    @given(
        st.one_of(
            st.text(max_size=300),
            st.lists(
                st.tuples(
                    st.one_of(
                        st.sampled_from(["cluster.keep_alive", "cluster.max_failed_keepalive_attempts", "wazuh_clusterd.debug",
                                         "cluster.sync_integrity", "cluster.kepp_alive", "analysisd.debug", "cluster.", "x"]),
                        st.text(max_size=10),
                    ),
                    st.sampled_from(["=", " = ", "==", ""]),
                    st.one_of(st.sampled_from(["1", "0", "0.5", ".5", "5.", "1e3", "-1", "inf", "nan", "3", "2"]), st.text(max_size=8)),
                    st.sampled_from(["", " # comment", "#"]),
                ).map("".join),
                max_size=8,
            ).map("\n".join),
        )
    )
    def test_internalOptions(self, text: str) -> None:
        try:
            options = parse_internal_options(text, "local_internal_options.conf")
        except InternalOptionsError:
            return
        self.assertIsInstance(options, InternalOptions)
        self.assertGreater(options.keep_alive, 0)
        self.assertGreaterEqual(options.max_failed_keepalive_attempts, 1)
        self.assertIn(options.debug, (0, 1, 2))

    @fuzz(0.5)
    @given(st.binary(max_size=300))
    def test_loadInternalOptionsAnyBytes(self, data: bytes) -> None:
        folder = tempfile.mkdtemp()
        try:
            path = os.path.join(folder, "local_internal_options.conf")
            with open(path, "wb") as f:
                f.write(data)
            try:
                load_internal_options(path)
            except InternalOptionsError:
                pass
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------
# API list parameters


FIELDS = ["id", "name", "ip", "status", "node_name", "version"]
queryValue = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"-?[0-9]{1,5}", fullmatch=True),
    st.lists(st.one_of(st.sampled_from(FIELDS), st.text(max_size=5)).map(lambda f: f"{'+-'[len(f) % 2]}{f}"), max_size=3).map(",".join),
    st.lists(st.one_of(st.sampled_from(FIELDS), st.text(max_size=5)), max_size=3).map(",".join),
    st.from_regex(r"\(?(id|name|status|x)(=|!=|<|>|~|==)[a-z0-9 ]{0,4}\)?([;,]\(?(ip|node_name)(=|~)[0-9.]{0,4}\)?){0,3}", fullmatch=True),
)
listQuery = st.dictionaries(
    st.one_of(st.sampled_from(["offset", "limit", "search", "sort", "select", "q", "pretty"]), st.text(max_size=5)),
    queryValue,
    max_size=6,
)
listItems = st.lists(
    st.dictionaries(
        st.sampled_from(FIELDS + ["other"]),
        st.one_of(jsonScalars, st.sampled_from(["001", "Active", "node01", "10.0.0.1"]), jsonValues),
        max_size=7,
    ),
    max_size=10,
)


class EnvelopeFuzz(SynchronousTestCase):
    @fuzz(2)
    @given(listItems, listQuery)
    def test_listQuery(self, items: list[dict[str, Any]], query: dict[str, str]) -> None:
        try:
            checkParameters(query, {**LIST_PARAMETERS, "pretty": "text"})
            page = ListQuery.fromQuery(query).page(items, FIELDS)
        except ApiError as e:
            self.assertIsInstance(e.code, int)
            self.assertIsInstance(e.body()["message"], str)
            return
        self.assertLessEqual(page["totalItems"], len(items))
        self.assertLessEqual(len(page["items"]), page["totalItems"])
        json.dumps(page)

    @fuzz(2)
    @given(st.text(max_size=40, alphabet=st.sampled_from("ab.=!<>~;,() 1\u00e9")))
    def test_queryLanguage(self, text: str) -> None:
        """Any text parses, or is refused with 1407 or 1409: never another exception."""
        try:
            parseQuery(text)
        except ApiError as e:
            self.assertIn(e.code, (1407, 1409))


# ---------------------------------------------------------------------------
# Bugs the fuzzing found, each kept as its minimal example (all fixed).


class ConnectionBugs(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.logs = LogEvents(self)

    def test_answerToNothingRaisesOutOfDataReceived(self) -> None:
        stranger = self.net.connectStranger(self.master, Factory.forProtocol(Protocol))
        stranger.client.transport.write(amp.AmpBox({amp.ANSWER: b"99"}).serialize())
        try:
            self.net.flush()
        except KeyError as e:
            self.fail(f"KeyError {e} escaped the master's dataReceived")
        self.assertTrue(stranger.serverTLS.transport.disconnecting)
        self.assertTrue(self.logs.lines(LogLevel.warn))

    def test_overlongKeyDropsPeerSilently(self) -> None:
        stranger = self.net.connectStranger(self.master, Factory.forProtocol(Protocol))
        self.logs.clear()
        stranger.client.transport.write(b"\x01\x00" + b"k" * 256)
        self.net.flush()
        self.assertTrue(stranger.serverTLS.transport.disconnecting)
        self.assertTrue(self.logs.lines(LogLevel.warn), "dropped without a log line")


class DecoderBugs(SynchronousTestCase):
    def test_decodeBoxAcceptsOverlongKey(self) -> None:
        data = serialiseRaw([(b"k" * 256, b"v")])
        self.assertRaises(ProtocolViolation, decodeBox, data)

    def test_manifestDeepNesting(self) -> None:
        decoder = ManifestDecoder()
        try:
            decoder.feed(b"[" * 5000 + b"\n")
        except ManifestError:
            pass
        except RecursionError:
            self.fail("RecursionError escaped ManifestDecoder.feed")
        self.assertRaises(ManifestError, decoder.finish)

    def test_jsonObjectDeepNesting(self) -> None:
        self.assertRaises(ValueError, jsonObject, "[" * 5000)

    def test_clientKeysHugeID(self) -> None:
        data = b"9" * 4301 + b" agent any " + b"0" * 64 + b"\n"
        self.assertEqual(parseClientKeys(data).serialise(), data)

    def test_clientKeysScopeIDInjection(self) -> None:
        ip = "fe80::1%x\n002 injected any " + "b" * 64 + "\n#"
        self.assertIn("scope", ipProblem(ip))
        self.assertIsNotNone(ipProblem("fe80::1%eth0"))
        self.assertIsNone(ipProblem("fe80::1"))
        self.assertRaises(ValueError, AgentKey, "001", "honest", ip, "a" * 64)
        self.assertEqual(ClientKeys().serialise(), b"")


    def test_clientKeysNonUtf8LineID(self) -> None:
        keys = parseClientKeys(b"001 caf\xe9 any " + b"0" * 64 + b"\n")
        self.assertEqual(keys.nextID(), "002")


    def test_apiAgentIDOfManyDigits(self) -> None:
        from wazuhcluster.api.endpoints import _agentID

        self.assertIsInstance(_agentID("9" * 4301), str)


class ConfigBugs(SynchronousTestCase):
    def section(self, port: str, disabled: str) -> str:
        return (
            "<ossec_config><cluster><name>wazuh</name><node_name>node01</node_name>"
            "<key>c98b62a9b6169ac5f67dae55ae4a9088</key><node_type>master</node_type>"
            f"<port>{port}</port><nodes><node>10.0.0.1</node></nodes>"
            f"<disabled>{disabled}</disabled></cluster></ossec_config>"
        )

    def test_portOfOtherDigitsWhenDisabled(self) -> None:
        config, _ = parse_cluster_config(self.section("\u00b2", "yes"), "ossec.conf")
        self.assertEqual(config.port, 1516)

    def test_portOfManyDigits(self) -> None:
        self.assertRaises(ConfigError, parse_cluster_config, self.section("9" * 4301, "no"), "ossec.conf")
