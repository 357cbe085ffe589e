"""
The cluster port's defences, over real (in-memory) TLS on a clock: what a
stranger may send before the key proof, the caps on connections that have
not proved the key, the throttled one-line warnings, arguments a peer can
get wrong without a traceback, and who may join (allow-list, most workers).
"""

from __future__ import annotations

import struct

from attrs import evolve
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certs import selfSigned
from tests.support.memorynet import FAST, MasterHarness, MemoryNetwork, settings
from tests.unit.test_handshake import LogCapture
from wazuhcluster.protocol.nodeinfo import ListNodes
from wazuhcluster.protocol.sealed import PREAUTH_MAX_KEYS, PREAUTH_MAX_VALUE
from wazuhcluster.protocol.workercommands import Authenticate, KeepAlive
from wazuhcluster.tls import fingerprint
from wazuhcluster.worker.connection import HandshakeFailed


def unterminatedValue(size: int) -> bytes:
    """The start of a box whose one value announces C{size} bytes and sends some."""
    key = b"junk"
    return struct.pack("!H", len(key)) + key + struct.pack("!H", size) + b"x" * min(size, 4096)


class Base(SynchronousTestCase):
    options = FAST

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock, options=self.options)
        self.logs = LogCapture(self)

    def stranger(self, host: str = "10.0.0.2"):
        return self.net.connectStranger(self.master, Factory.forProtocol(amp.AMP), host)

    def closed(self, connection) -> bool:
        return connection.serverTLS.transport.disconnecting

    def criticals(self) -> list[str]:
        return self.logs.lines(LogLevel.critical)


class BeforeTheKeyProofTests(Base):
    """A stranger may send only the handshake's own small boxes."""

    def test_longValueDropped(self) -> None:
        """
        A value longer than the handshake's (AMP would buffer 64 KiB of it)
        drops the connection as soon as its length is read, with one
        WARNING naming the peer; the master buffered almost nothing.
        """
        connection = self.stranger()
        connection.client.transport.write(unterminatedValue(0xFFFF))
        connection.flush()
        self.assertTrue(self.closed(connection))
        self.assertTrue(self.logs.has("10.0.0.2", LogLevel.warn))
        self.assertTrue(self.logs.has(f"at most {PREAUTH_MAX_VALUE} until then", LogLevel.warn))
        self.assertLess(len(connection.server._unprocessed), 8192)

    def test_valueAtTheLimitIsNotTooLong(self) -> None:
        """A value of exactly the limit is read (and then judged as a box)."""
        connection = self.stranger()
        connection.client.transport.write(unterminatedValue(PREAUTH_MAX_VALUE)[: 8 + PREAUTH_MAX_VALUE - 1])
        connection.flush()
        self.assertFalse(self.closed(connection))

    def test_tooManyKeys(self) -> None:
        connection = self.stranger()
        connection.client.sendBox(amp.AmpBox({b"k%d" % i: b"v" for i in range(PREAUTH_MAX_KEYS + 1)}))
        connection.flush()
        self.assertTrue(self.closed(connection))
        self.assertTrue(self.logs.has("too many keys", LogLevel.warn))

    def test_workerStillJoinsAndSendsBigValues(self) -> None:
        """After the proof, AMP's full 64 KiB values pass again (a page of nodes)."""
        connection, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)
        self.assertGreater(connection.server.MAX_LENGTH, 0)
        big = connection.client.callRemote(ListNodes, offset=0, limit=10)
        self.net.flush()
        self.successResultOf(big)
        self.assertFalse(self.closed(connection))


class AuthenticateFloodTests(Base):
    """A pre-proof Authenticate with a missing argument: one WARNING line, no traceback."""

    def badAuthenticate(self, host: str = "10.0.0.2"):
        connection = self.stranger(host)
        connection.client.sendBox(
            amp.AmpBox({amp.COMMAND: Authenticate.commandName, amp.ASK: b"1"})
        )
        connection.flush()
        return connection

    def test_missingArgument(self) -> None:
        connection = self.badAuthenticate()
        self.assertTrue(self.closed(connection))
        warnings = self.logs.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("10.0.0.2", warnings[0])
        self.assertIn("lacks the argument 'worker_nonce'", warnings[0])
        self.assertNotIn("Traceback", warnings[0])
        self.assertEqual(self.criticals(), [])

    def test_floodIsThrottledPerPeer(self) -> None:
        """
        Thirty bad handshakes from one address in a minute: one line; from a
        second address: its own line; a minute later, one more line that
        counts those left out.
        """
        for _ in range(30):
            self.badAuthenticate("10.0.0.2")
        self.badAuthenticate("10.0.0.3")
        warnings = self.logs.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 2, warnings)
        self.clock.advance(61)
        self.badAuthenticate("10.0.0.2")
        warnings = self.logs.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 3, warnings)
        self.assertIn("29 more like it from 10.0.0.2", warnings[-1])


class PeerErrorsAfterTheProofTests(Base):
    """A joined worker's bad arguments or a failing responder: an error answer and one line."""

    def setUp(self) -> None:
        super().setUp()
        self.connection, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)

    def test_missingArgument(self) -> None:
        """
        A ListNodes without its arguments is answered BAD_ARGUMENTS and the
        link stays: keep-alives still pass.
        """
        failures: list = []
        self.connection.client.callRemote(_BareListNodes).addErrback(failures.append)
        self.net.flush()
        [failure] = failures
        self.assertIn("lacks the argument 'offset'", failure.getErrorMessage())
        warnings = self.logs.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("node02", warnings[0])
        self.assertEqual(self.criticals(), [])
        alive = self.connection.client.callRemote(KeepAlive)
        self.net.flush()
        self.successResultOf(alive)

    def test_undeclaredFailure(self) -> None:
        """
        A responder that fails in a way its command does not declare: one
        ERROR line naming the peer and the error, no traceback, and the
        connection closes as AMP closes it.
        """

        def broken():
            raise RuntimeError("the fleet is broken")

        self.master.fleet.nodes = broken
        failures: list = []
        self.connection.client.callRemote(ListNodes, offset=0, limit=10).addErrback(failures.append)
        self.net.flush()
        self.assertEqual(len(failures), 1)
        errors = self.logs.lines(LogLevel.error)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("Could not answer ListNodes from node02", errors[0])
        self.assertIn("RuntimeError: the fleet is broken", errors[0])
        self.assertEqual(self.criticals(), [])
        self.assertTrue(self.closed(self.connection))


class _BareListNodes(amp.Command):
    """ListNodes as a broken peer sends it: without its arguments."""

    commandName = ListNodes.commandName
    arguments: list = []
    response: list = []


class CapsTests(Base):
    """Connections that have not proved the key are capped, in all and per address."""

    options = evolve(FAST, max_unauthenticated_connections=4, max_unauthenticated_per_address=2)

    def test_perAddress(self) -> None:
        first, second, third = (self.stranger("10.0.0.7") for _ in range(3))
        self.assertFalse(self.closed(first))
        self.assertFalse(self.closed(second))
        self.assertTrue(self.closed(third))
        self.assertTrue(self.logs.has("cluster.max_unauthenticated_per_address", LogLevel.warn))
        self.assertTrue(self.logs.has("10.0.0.7", LogLevel.warn))
        # Another address still gets in; and when one closes, its slot is free.
        self.assertFalse(self.closed(self.stranger("10.0.0.8")))
        first.client.transport.loseConnection()
        self.net.flush()
        self.assertFalse(self.closed(self.stranger("10.0.0.7")))

    def test_total(self) -> None:
        strangers = [self.stranger(f"10.0.1.{i}") for i in range(4)]
        self.assertFalse(any(self.closed(c) for c in strangers))
        self.assertTrue(self.closed(self.stranger("10.0.1.99")))
        self.assertTrue(self.logs.has("cluster.max_unauthenticated_connections", LogLevel.warn))
        self.assertEqual(self.master.factory.strangersTotal, 4)

    def test_expiredStrangersFreeTheirSlots(self) -> None:
        for i in range(4):
            self.stranger(f"10.0.1.{i}")
        self.clock.advance(FAST.handshake_timeout + 1)
        self.net.flush()
        self.assertEqual(self.master.factory.strangersTotal, 0)
        self.assertEqual(self.master.factory.strangers, {})

    def test_workersDoNotCount(self) -> None:
        """A worker that proved the key leaves the count: five join from one address."""
        for i in range(5):
            _, joined = self.net.joinWorker(self.master, settings(f"node{i}"), clientHost="10.0.0.9")
            self.successResultOf(joined)
        self.assertEqual(len(self.master.fleet.workers), 5)
        self.assertEqual(self.master.factory.strangersTotal, 0)

    def test_workerJoinsWhileAStrangerHoldsItsSlots(self) -> None:
        """Strangers from one address (at its cap) do not keep a worker from another out."""
        for _ in range(3):
            self.stranger("10.0.0.66")
        _, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)


class AdmissionTests(Base):
    """The operator's allow-list of workers, and the most workers at once."""

    def restrict(self, **changes: object) -> None:
        self.master = MasterHarness(self.clock, options=evolve(FAST, **changes))

    def join(self, name: str, tls=None):
        return self.net.joinWorker(self.master, settings(name, tls=tls))

    def test_nameNotAllowed(self) -> None:
        self.restrict(allowed_workers=(("node02", ""),))
        self.successResultOf(self.join("node02")[1])
        connection, joined = self.join("invented")
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn("not in the master's cluster.allowed_workers", failure.getErrorMessage())
        warnings = [line for line in self.logs.lines(LogLevel.warn) if "invented" in line]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("10.0.0.2", warnings[0])
        self.assertEqual(list(self.master.fleet.workers), ["node02"])

    def test_pinnedCertificate(self) -> None:
        good = selfSigned("node02")
        self.restrict(allowed_workers=(("node02", fingerprint(good.certificate).hex()),))
        _, joined = self.join("node02", tls=selfSigned("node02-impostor"))
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn("its certificate is not the one", failure.getErrorMessage())
        self.successResultOf(self.join("node02", tls=good)[1])

    def test_mostWorkers(self) -> None:
        self.restrict(max_workers=2)
        self.successResultOf(self.join("node02")[1])
        self.successResultOf(self.join("node03")[1])
        _, joined = self.join("node04")
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn("the most cluster.max_workers allows", failure.getErrorMessage())
        self.assertEqual(sorted(self.master.fleet.workers), ["node02", "node03"])


class StartTLSTests(Base):
    """AMP's own StartTLS is not a command of the sealed link, even for a worker."""

    def test_startTLSIsUnknown(self) -> None:
        connection, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)
        failures: list = []
        connection.client.callRemote(_BareStartTLS).addErrback(failures.append)
        self.net.flush()
        [failure] = failures
        self.assertTrue(failure.check(amp.UnhandledCommand), failure)
        self.assertFalse(self.closed(connection))


class _BareStartTLS(amp.Command):
    commandName = amp.StartTLS.commandName
    arguments: list = []
    response: list = []
