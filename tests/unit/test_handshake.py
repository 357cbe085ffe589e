"""
The handshake between a worker and the master, over real in-memory TLS.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certs import selfSigned
from tests.support.memorynet import OTHER_KEY, MasterHarness, MemoryNetwork, settings
from wazuhcluster.protocol.sealed import SEALED_KEY, SealedAMP
from wazuhcluster.worker.connection import HandshakeFailed, MasterConnectionFactory
from wazuhcluster.protocol.workercommands import Hello, KeepAlive


class LogCapture:
    """Collects the text of log events while a test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        from twisted.logger import formatEvent

        self.events: list[dict] = []
        self._format = formatEvent
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, minimum: LogLevel = LogLevel.debug) -> list[str]:
        return [self._format(e) for e in self.events if e["log_level"] >= minimum]

    def has(self, fragment: str, minimum: LogLevel = LogLevel.debug) -> bool:
        return any(fragment in line for line in self.lines(minimum))


class HandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.logs = LogCapture(self)

    def connectWorker(self, **overrides):
        return self.net.joinWorker(self.master, settings(overrides.pop("nodeName", "node02"), **overrides))

    def test_workerJoins(self) -> None:
        """
        A worker with the cluster key joins: both ends seal, the fleet lists
        it by name with its address, and keep-alives are recorded.
        """
        connection, joined = self.connectWorker()
        self.successResultOf(joined)
        self.assertEqual(connection.client.masterName, "master-node")
        self.assertTrue(connection.client.sealed)
        self.assertTrue(connection.server.sealed)
        self.assertEqual(list(self.master.fleet.workers), ["node02"])
        self.assertEqual(
            [(n.name, n.address, n.type) for n in self.master.fleet.nodes()],
            [("master-node", "10.0.0.1", "master"), ("node02", "10.0.0.2", "worker")],
        )
        self.clock.advance(30)
        answered = connection.client.callRemote(KeepAlive)
        self.net.flush()
        self.successResultOf(answered)
        self.assertEqual(connection.server.lastKeepAlive, self.clock.seconds())
        self.assertTrue(self.logs.has("Worker node02 connected from 10.0.0.2"))

    def assertRefused(self, joined: Deferred, connection, reason: str) -> None:
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn(reason, failure.getErrorMessage())
        self.assertEqual(self.master.fleet.workers, {})
        self.assertTrue(self.logs.has(reason, LogLevel.warn), self.logs.lines())
        self.assertTrue(connection.serverTLS.transport.disconnecting)

    def test_wrongKey(self) -> None:
        """
        A worker with another key fails the key proof: the master says so in
        its log, tells the worker, and closes the connection.
        """
        connection, joined = self.connectWorker(key=OTHER_KEY)
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn("wrong cluster key", failure.getErrorMessage())
        self.assertTrue(self.logs.has("failed to prove it holds the cluster key", LogLevel.warn))
        self.assertFalse(connection.server.sealed)
        self.assertTrue(connection.serverTLS.transport.disconnecting)
        self.assertEqual(self.master.fleet.workers, {})

    def test_otherCluster(self) -> None:
        connection, joined = self.connectWorker(clusterName="other")
        self.assertRefused(joined, connection, "it belongs to cluster 'other'")

    def test_mastersOwnName(self) -> None:
        connection, joined = self.connectWorker(nodeName="master-node")
        self.assertRefused(joined, connection, "is the master's own name")

    def test_anotherMaster(self) -> None:
        connection, joined = self.connectWorker(nodeType="master")
        self.assertRefused(joined, connection, "only workers connect to the master")

    def test_otherMinorVersion(self) -> None:
        connection, joined = self.connectWorker(version="4.8.2")
        self.assertRefused(joined, connection, "major.minor must match")

    def test_samePatchLevelDifferenceAccepted(self) -> None:
        """Only major.minor must match: 4.9.x workers join a 4.9.0 master."""
        _, joined = self.connectWorker(version="4.9.7")
        self.successResultOf(joined)

    def test_duplicateNameWhileAlive(self) -> None:
        """
        A second connection under the name of a live worker is refused; the
        first one stays.
        """
        first, joined = self.connectWorker()
        self.successResultOf(joined)
        second, joinedAgain = self.connectWorker()
        failure = self.failureResultOf(joinedAgain, HandshakeFailed)
        self.assertIn("already connected", failure.getErrorMessage())
        self.assertIs(self.master.fleet.workers["node02"], first.server)

    def test_duplicateNameReplacesDeadConnection(self) -> None:
        """
        When the worker's old connection no longer answers (its network went
        away), a new connection with its name wins after one short probe
        instead of being locked out (Wazuh issue #1355).
        """
        first, joined = self.connectWorker()
        self.successResultOf(joined)
        self.net.connections.remove(first)  # the old link carries nothing any more
        second, joinedAgain = self.connectWorker()
        self.assertNoResult(joinedAgain)
        self.clock.advance(self.master.settings.options.handshake_timeout / 2)
        self.net.flush()
        self.successResultOf(joinedAgain)
        self.assertIs(self.master.fleet.workers["node02"], second.server)
        self.assertTrue(first.serverTLS.transport.disconnecting)
        self.assertTrue(self.logs.has("no longer answers", LogLevel.warn))

    def test_silentConnectionTimesOut(self) -> None:
        """
        A connection that never speaks (a health check) is closed after
        handshake_timeout, leaves nothing in the fleet, and is logged only at
        debug level.
        """
        connection = self.net.connect(
            self.master.factory,
            self.master.settings.tls,
            MasterConnectionFactory(settings("node02"), self.clock),
            selfSigned("node02"),
        )
        self.clock.advance(self.master.settings.options.handshake_timeout - 0.1)
        self.assertFalse(connection.serverTLS.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(connection.serverTLS.transport.disconnecting)
        self.assertEqual(self.master.fleet.workers, {})
        self.assertTrue(self.logs.has("Closing silent connection"))
        self.assertFalse(self.logs.has("Closing silent connection", LogLevel.info))

    def test_unfinishedHandshakeTimesOut(self) -> None:
        """A peer that starts the handshake but stalls is closed, with a warning."""
        connection = self.net.connect(
            self.master.factory,
            self.master.settings.tls,
            MasterConnectionFactory(settings("node02"), self.clock),
            selfSigned("node02"),
        )
        connection.flush()
        connection.client.callRemote(
            __import__("wazuhcluster.protocol.workercommands", fromlist=["Authenticate"]).Authenticate,
            worker_nonce=b"n" * 32,
        )
        connection.flush()
        self.clock.advance(self.master.settings.options.handshake_timeout + 0.1)
        self.assertTrue(connection.serverTLS.transport.disconnecting)
        self.assertTrue(self.logs.has("did not complete the handshake", LogLevel.warn))

    def test_joinedWorkerKeepsConnection(self) -> None:
        """The handshake timer no longer applies once a worker has joined."""
        connection, joined = self.connectWorker()
        self.successResultOf(joined)
        self.clock.advance(self.master.settings.options.handshake_timeout * 3)
        self.assertFalse(connection.serverTLS.transport.disconnecting)


class UnsealedPeerTests(SynchronousTestCase):
    """Peers that skip the key proof get nothing."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.logs = LogCapture(self)

    def test_helloBeforeKeyProof(self) -> None:
        """A Hello sent in clear, without the key proof, drops the connection."""
        connection = self.net.connectStranger(self.master, Factory.forProtocol(amp.AMP))
        answer = connection.client.callRemote(
            Hello, cluster_name="wazuh", node_name="node02", node_type="worker", version="4.9.0"
        )
        connection.flush()
        self.failureResultOf(answer)
        self.assertTrue(self.logs.has("before proving the cluster key", LogLevel.warn))
        self.assertEqual(self.master.fleet.workers, {})

    def test_sealedBoxBeforeKeyProof(self) -> None:
        """A box claiming to be sealed before the proof is a protocol violation."""
        connection = self.net.connectStranger(self.master, Factory.forProtocol(amp.AMP))
        connection.client.sendBox(amp.AmpBox({SEALED_KEY: b"x" * 40}))
        connection.flush()
        self.assertTrue(self.logs.has("sealed message before the key proof", LogLevel.warn))
        self.assertTrue(connection.serverTLS.transport.disconnecting)

    def test_tooManyKeys(self) -> None:
        """A box with more keys than any command has is cut off while it arrives."""
        connection = self.net.connectStranger(self.master, Factory.forProtocol(amp.AMP))
        connection.client.sendBox(amp.AmpBox({b"k%d" % i: b"v" for i in range(500)}))
        connection.flush()
        self.assertTrue(self.logs.has("too many keys", LogLevel.warn))
        self.assertTrue(connection.serverTLS.transport.disconnecting)


class SealedTrafficTests(SynchronousTestCase):
    """After the handshake, only fresh, authentic, in-order messages get through."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.logs = LogCapture(self)
        self.connection, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)
        # Record the outer (sealed) boxes the master receives, and let a test
        # hold them back.
        server = self.connection.server
        self.received: list[amp.AmpBox] = []
        self.holdBack = False
        original = server.ampBoxReceived

        def recording(box: amp.AmpBox) -> None:
            self.received.append(box)
            if not self.holdBack:
                original(box)

        server.ampBoxReceived = recording
        self.deliver = original

    def keepAlive(self) -> Deferred:
        d = self.connection.client.callRemote(KeepAlive)
        self.connection.flush()
        return d

    def test_everyBoxIsSealed(self) -> None:
        """On the wire, a box after the handshake is one sealed value and nothing else."""
        self.successResultOf(self.keepAlive())
        self.assertEqual([list(box) for box in self.received], [[SEALED_KEY]])
        self.assertNotIn(b"KeepAlive", self.received[0][SEALED_KEY])

    def test_replayRejected(self) -> None:
        """A sealed message delivered twice drops the connection, naming the peer."""
        self.successResultOf(self.keepAlive())
        self.deliver(self.received[0])
        self.assertTrue(self.logs.has("out of sequence", LogLevel.error))
        self.assertTrue(self.logs.has("node02", LogLevel.error))
        self.assertTrue(self.connection.serverTLS.transport.disconnecting)

    def test_tamperedRejected(self) -> None:
        """A message with one bit flipped fails authentication."""
        self.holdBack = True
        self.keepAlive()
        sealed = bytearray(self.received[0][SEALED_KEY])
        sealed[-1] ^= 1
        self.deliver(amp.AmpBox({SEALED_KEY: bytes(sealed)}))
        self.assertTrue(self.logs.has("failed authentication", LogLevel.error))
        self.assertTrue(self.connection.serverTLS.transport.disconnecting)

    def test_reorderedRejected(self) -> None:
        """Two messages delivered in swapped order are rejected."""
        self.holdBack = True
        self.keepAlive()
        self.keepAlive()
        self.deliver(self.received[1])
        # The worker's Hello was its sealed message 0.
        self.assertTrue(self.logs.has("out of sequence (got 2, expected 1)", LogLevel.error))

    def test_messageOverOneValueRefusedAtSend(self) -> None:
        """
        A box whose serialised form would not fit one sealed AMP value is
        refused when sent, before anything reaches the wire.
        """
        from wazuhcluster.protocol.sealed import MAX_MESSAGE

        box = amp.AmpBox({b"a": b"x" * 60000, b"b": b"y" * (MAX_MESSAGE - 60000)})
        self.assertRaises(amp.TooLong, self.connection.client.sendBox, box)
        self.connection.flush()
        self.assertEqual(self.received, [])
        small = amp.AmpBox({b"a": b"x" * 60000})
        self.connection.client.sendBox(small)
        self.connection.flush()
        self.assertEqual(len(self.received), 1)
        # It arrives, but it is no command: the peer is dropped, not crashed on.
        self.assertTrue(self.logs.has("neither a command nor an answer", LogLevel.error))

    def test_unsealedAfterProofRejected(self) -> None:
        """Once sealed, a box in clear is refused."""
        self.deliver(amp.AmpBox({amp.COMMAND: b"KeepAlive", amp.ASK: b"1"}))
        self.assertTrue(self.logs.has("unsealed message after the key proof", LogLevel.error))


class ManInTheMiddleTests(SynchronousTestCase):
    """
    Someone who terminates TLS on both sides and relays the AMP boxes, but
    does not hold the cluster key, cannot make the handshake succeed.
    """

    def test_relayedProofFails(self) -> None:
        clock = Clock()
        net = MemoryNetwork(clock)
        master = MasterHarness(clock)
        logs = LogCapture(self)
        workerSettings = settings("node02")

        class Relay(amp.BinaryBoxProtocol):
            other: "Relay | None" = None

            def __init__(self) -> None:
                super().__init__(self)
                self.pending: list[amp.AmpBox] = []

            def ampBoxReceived(self, box: amp.AmpBox) -> None:
                if self.other is not None and self.other.transport is not None:
                    self.other.sendBox(box)
                else:
                    self.pending.append(box)

            def startReceivingBoxes(self, sender: object) -> None:
                pass

            def stopReceivingBoxes(self, reason: object) -> None:
                pass

        facingWorker = Relay()
        facingMaster = Relay()
        facingWorker.other, facingMaster.other = facingMaster, facingWorker
        # worker -> (TLS with the relay's own certificate) -> relay
        toRelay = net.connect(
            Factory.forProtocol(lambda: facingWorker),
            selfSigned("relay"),
            MasterConnectionFactory(workerSettings, clock),
            workerSettings.tls,
        )
        # relay -> (its own TLS session) -> master
        toMaster = net.connect(
            master.factory, master.settings.tls, Factory.forProtocol(lambda: facingMaster), selfSigned("relay")
        )
        net.flush()
        joined = Deferred.fromCoroutine(toRelay.client.join())
        net.flush()
        for box in facingWorker.pending:
            facingMaster.sendBox(box)
        net.flush()
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn("wrong cluster key", failure.getErrorMessage())
        self.assertTrue(logs.has("failed to prove it holds the cluster key", LogLevel.warn))
        self.assertEqual(master.fleet.workers, {})
        self.assertFalse(toMaster.server.sealed)


class SealedAMPBaseTests(SynchronousTestCase):
    def test_defaultsRefuseEverythingUnsealed(self) -> None:
        """A bare SealedAMP lets no command through before sealing."""
        self.assertEqual(tuple(SealedAMP.unsealedCommands), ())
