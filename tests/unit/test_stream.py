"""
Streams over a real (in-memory, TLS, sealed) link on a Clock.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import FAST, MasterHarness, MemoryNetwork, settings
from tests.unit.test_handshake import LogCapture
from wazuhcluster.protocol.stream import CHUNK_SIZE, WINDOW, StreamFailed, StreamRefused, chunksOf
from wazuhcluster.protocol.workercommands import KeepAlive


class CollectingSink:
    """Keeps what it is fed; can be made slow by holding each feed."""

    def __init__(self, info: str, slow: bool = False) -> None:
        self.info = info
        self.slow = slow
        self.chunks: list[bytes] = []
        self.pending: list[Deferred] = []
        self.closedWith: str | None = None
        self.abortedWith: str | None = None

    def feed(self, data: bytes):
        self.chunks.append(data)
        if self.slow:
            d: Deferred[None] = Deferred()
            self.pending.append(d)
            return d
        return None

    def close(self) -> str:
        self.closedWith = f"{len(self.chunks)} chunks of {self.info}"
        return self.closedWith

    def abort(self, reason: str) -> None:
        self.abortedWith = reason


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.sinks: list[CollectingSink] = []
        self.slow = False

        def makeSink(info: str) -> CollectingSink:
            sink = CollectingSink(info, self.slow)
            self.sinks.append(sink)
            return sink

        self.master = MasterHarness(
            self.clock, sinksFor=lambda connection: {"test": (makeSink, 4 * 1024 * 1024)}
        )
        self.logs = LogCapture(self)
        self.connection, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)

    def send(self, payload: list[bytes], kind: str = "test") -> Deferred:
        d = Deferred.fromCoroutine(
            self.connection.client.streams.send(kind, "info", chunksOf(iter(payload)), timeout=FAST.timeout_receiving_file)
        )
        self.net.flush()
        return d

    def test_arrivesWholeAndInOrder(self) -> None:
        """A megabyte arrives byte for byte, cut in chunks no larger than CHUNK_SIZE."""
        data = os.urandom(1024 * 1024 + 17)
        result = self.send([data[:100_000], data[100_000:]])
        self.assertEqual(self.successResultOf(result), f"{len(self.sinks[0].chunks)} chunks of info")
        self.assertEqual(b"".join(self.sinks[0].chunks), data)
        self.assertTrue(all(len(c) <= CHUNK_SIZE for c in self.sinks[0].chunks))
        self.assertIsNone(self.sinks[0].abortedWith)

    def test_windowBoundsWhatIsInFlight(self) -> None:
        """
        With a sink that holds every chunk, the receiver has at most one chunk
        being fed and the sender at most WINDOW unanswered; keep-alives still
        cross meanwhile.
        """
        self.slow = True
        result = self.send([b"x" * CHUNK_SIZE] * (WINDOW * 3))
        sink = self.sinks[0]
        self.assertEqual(len(sink.chunks), 1)
        keepAlive = self.connection.client.callRemote(KeepAlive)
        self.net.flush()
        self.successResultOf(keepAlive)
        fed = 1
        while sink.pending:
            sink.pending.pop(0).callback(None)
            self.net.flush()
            fed += 1
            self.assertLessEqual(len(sink.chunks), fed)
        self.successResultOf(result)
        self.assertEqual(len(sink.chunks), WINDOW * 3)

    def test_slowButMovingReceiverNotGivenUp(self) -> None:
        """
        A sink that takes most of timeout_receiving_file for each chunk is
        slow, not stalled: the whole stream takes many times the timeout and
        still completes on both sides.
        """
        self.slow = True
        result = self.send([b"x" * CHUNK_SIZE] * (WINDOW * 2))
        sink = self.sinks[0]
        while sink.pending:
            self.clock.advance(FAST.timeout_receiving_file * 0.6)
            sink.pending.pop(0).callback(None)
            self.net.flush()
        self.successResultOf(result)
        self.assertIsNone(sink.abortedWith)
        self.assertGreater(self.clock.seconds(), FAST.timeout_receiving_file * WINDOW)

    def test_stalledReceiverGivenUp(self) -> None:
        """A receiver that takes no chunk for timeout_receiving_file seconds fails the stream, in words."""
        self.slow = True
        result = self.send([b"x" * CHUNK_SIZE] * (WINDOW * 2))
        self.clock.advance(FAST.timeout_receiving_file)
        self.net.flush()
        error = self.failureResultOf(result, TimeoutError).value
        self.assertEqual(str(error), f"the receiver took no chunk for {FAST.timeout_receiving_file:g} seconds")

    def test_unknownKindRefused(self) -> None:
        self.failureResultOf(self.send([b"x"], kind="nope"), StreamRefused)

    def test_tooLarge(self) -> None:
        """A stream over the kind's limit is abandoned on both sides."""
        result = self.send([b"x" * CHUNK_SIZE] * (4 * 1024 * 1024 // CHUNK_SIZE + 2))
        self.failureResultOf(result, StreamFailed)
        self.assertIn("more than", self.sinks[0].abortedWith)
        self.assertTrue(self.logs.has("Abandoned incoming test stream", LogLevel.warn))

    def test_stalledSenderAbandoned(self) -> None:
        """
        A sender that stops sending (its data source hangs) is abandoned by
        the receiver after timeout_receiving_file, and the sender fails too.
        """
        stuck: Deferred[bytes | None] = Deferred()
        calls = iter([b"first", None])

        def source():
            value = next(calls)
            return value if value is not None else stuck

        result = Deferred.fromCoroutine(
            self.connection.client.streams.send("test", "info", source, timeout=FAST.timeout_receiving_file)
        )
        self.net.flush()
        self.clock.advance(FAST.timeout_receiving_file)
        self.net.flush()
        self.assertIn("nothing received", self.sinks[0].abortedWith)
        stuck.callback(None)
        self.net.flush()
        self.failureResultOf(result, StreamFailed)

    def test_connectionLostAbandonsStream(self) -> None:
        self.slow = True
        result = self.send([b"x" * CHUNK_SIZE] * 3)
        self.connection.clientTLS.transport.abortConnection()
        self.net.flush()
        self.assertEqual(self.sinks[0].abortedWith, "the connection was lost")
        from twisted.internet.error import ConnectionLost

        self.failureResultOf(result, ConnectionLost)

    def test_outOfOrderChunkDropsStream(self) -> None:
        """A chunk with the wrong sequence number abandons the stream."""
        endpoint = self.connection.server.streams
        endpoint.opened(99, "test", "direct")
        self.assertRaises(StreamFailed, endpoint.chunk, 99, 1, b"skipped one")
        self.assertIn("chunk 1 arrived where 0 was expected", self.sinks[0].abortedWith)

    def test_checksumMismatch(self) -> None:
        endpoint = self.connection.server.streams
        endpoint.opened(98, "test", "direct")
        self.successResultOf(endpoint.chunk(98, 0, b"abc"))
        self.failureResultOf(endpoint.closed(98, 1, 3, b"\0" * 32), StreamFailed)
        self.assertIn("SHA-256", self.sinks[0].abortedWith)
        self.assertIsNone(self.sinks[0].closedWith)

    def test_notBeforeHello(self) -> None:
        """A connection that has not said hello cannot open streams."""
        from twisted.internet.protocol import Factory
        from twisted.protocols import amp

        stranger = self.net.connectStranger(self.master, Factory.forProtocol(amp.AMP))
        stranger.server.streams  # exists, but the peer has not joined
        self.assertRaises(StreamRefused, stranger.server.streams.opened, 1, "test", "")
