"""
The worker's link to the master under its real ClientService, and the
master's keep-alive watch, over in-memory TLS on a Clock.
"""

from __future__ import annotations

from twisted.internet.address import HostnameAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import FAST, MasterHarness, MemoryEndpoint, MemoryNetwork, settings
from tests.unit.test_handshake import LogCapture
from wazuhcluster.worker.masterlink import MasterLink, retryPolicy
from wazuhcluster.protocol.nodeinfo import NotConnectedToMaster


class MasterLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.master.fleet.startService()
        self.addCleanup(self.master.fleet.stopService)
        self.logs = LogCapture(self)
        self.workerSettings = settings("node02")
        self.endpoint = MemoryEndpoint(self.net, self.master, self.workerSettings.tls)
        self.link = MasterLink(self.workerSettings, self.endpoint, self.clock, jitter=lambda: 0.0)

    def start(self) -> None:
        self.link.startService()
        self.net.flush()

    def stop(self) -> None:
        self.link.stopService()
        self.net.flush()

    def test_joinsAndKeepsAlive(self) -> None:
        """
        The link joins, then sends a keep-alive every keep_alive seconds,
        which the master records; the master keeps the worker as long as
        they come.
        """
        self.start()
        self.addCleanup(self.stop)
        self.assertIsNotNone(self.link.connection)
        self.assertTrue(self.logs.has("Successfully connected to master master-node"))
        for _ in range(20):
            self.clock.advance(FAST.keep_alive)
            self.net.flush()
        worker = self.master.fleet.workers["node02"]
        self.assertEqual(worker.lastKeepAlive, self.clock.seconds())
        self.assertEqual(self.link.failedKeepAlives, 0)
        # With --debug, the worker shows its keep-alives being answered.
        answered = [line for line in self.logs.lines() if "Keep-alive answered by the master in" in line]
        self.assertEqual(len(answered), 20, answered)
        self.assertFalse(self.logs.has("Keep-alive answered", LogLevel.info))

    def test_eachJoinStartsTheSyncs(self) -> None:
        """The onJoined hooks run once per join: at the first, and after a reconnection."""
        joins: list[object] = []
        self.link.onJoined.append(lambda: joins.append(self.link.connection))
        self.start()
        self.addCleanup(self.stop)
        self.assertEqual(joins, [self.link.connection])
        link = self.net.connections.pop()
        link.serverTLS.transport.abortConnection()
        link.pump.flush()
        self.assertIsNone(self.link.connection)
        self.assertEqual(len(joins), 1)
        for _ in range(4):
            self.clock.advance(FAST.connection_retry)
            self.net.flush()
        self.assertIsNotNone(self.link.connection)
        self.assertEqual(joins[1:], [self.link.connection])

    def test_askTheMaster(self) -> None:
        """A worker answers node questions by asking the master."""
        self.start()
        self.addCleanup(self.stop)
        nodes = Deferred.fromCoroutine(self.link.nodes())
        self.net.flush()
        self.assertEqual(
            [(n.name, n.type) for n in self.successResultOf(nodes)],
            [("master-node", "master"), ("node02", "worker")],
        )
        health = Deferred.fromCoroutine(self.link.health())
        self.net.flush()
        name, nodes = self.successResultOf(health)
        self.assertEqual(name, "wazuh")
        self.assertEqual(nodes[1].last_keep_alive, nodes[1].connected_since)

    def test_notConnected(self) -> None:
        """Before it joins, a worker says it is not connected to the master."""
        self.endpoint.refuse = True
        self.start()
        self.addCleanup(self.stop)
        self.failureResultOf(Deferred.fromCoroutine(self.link.nodes()), NotConnectedToMaster)

    def test_deadMasterDetectedByKeepAlives(self) -> None:
        """
        When the master stops answering, the worker drops the connection after
        max_failed_keepalive_attempts unanswered keep-alives, then reconnects
        and joins again (the master dropped its silent side meanwhile).
        """
        self.start()
        self.addCleanup(self.stop)
        first = self.link.connection
        deadLink = self.net.connections[0]
        self.net.connections.remove(deadLink)  # nothing crosses any more
        # Each keep-alive is sent, then times out one interval later.
        for _ in range(2 * FAST.max_failed_keepalive_attempts):
            self.assertFalse(deadLink.clientTLS.transport.disconnecting)
            self.clock.advance(FAST.keep_alive)
        self.assertEqual(self.link.failedKeepAlives, FAST.max_failed_keepalive_attempts)
        self.assertTrue(deadLink.clientTLS.transport.disconnecting)
        self.assertTrue(self.logs.has("stopped answering keep-alives", LogLevel.error))
        self.assertTrue(self.logs.has(f"not answered by the master (no answer within {FAST.keep_alive} seconds)"))
        # The broken link reports its loss; the worker retries and joins anew.
        deadLink.pump.flush()
        self.clock.advance(FAST.max_allowed_time_without_keepalive)
        self.net.flush()
        self.clock.advance(FAST.connection_retry)
        self.net.flush()
        self.assertIsNotNone(self.link.connection)
        self.assertIsNot(self.link.connection, first)
        self.assertEqual(list(self.master.fleet.workers), ["node02"])
        self.assertEqual(self.endpoint.attempts, 2)

    def test_silentMasterIsGivenUp(self) -> None:
        """
        A peer that accepts the connection and never answers (a frozen
        master, a proxy without backend) costs one handshake_timeout, then
        the worker tries again; once a real master answers, it joins.
        """
        self.endpoint.silent = True
        self.start()
        self.addCleanup(self.stop)
        self.assertEqual(self.endpoint.attempts, 1)
        self.clock.advance(FAST.handshake_timeout - 0.01)
        self.net.flush()
        self.assertEqual(self.endpoint.attempts, 1)
        self.assertIsNone(self.link.connection)
        self.clock.advance(0.01)
        self.net.flush()
        self.assertTrue(
            self.logs.has(f"the master did not complete the handshake within {FAST.handshake_timeout} seconds", LogLevel.error)
        )
        self.assertTrue(self.net.connections[0].clientTLS.transport.disconnecting)
        self.endpoint.silent = False
        self.clock.advance(FAST.connection_retry)
        self.net.flush()
        self.assertEqual(self.endpoint.attempts, 2)
        self.assertIsNotNone(self.link.connection)

    def test_refusedWorkerRetriesWithBackoff(self) -> None:
        """
        A refused worker keeps trying, waiting longer each time up to
        connection_retry, and logs the master's reason each time.
        """
        self.link = MasterLink(
            settings("node02", clusterName="other"), self.endpoint, self.clock, jitter=lambda: 0.0
        )
        self.start()
        self.addCleanup(self.stop)
        self.assertEqual(self.endpoint.attempts, 1)
        self.assertIsNone(self.link.connection)
        policy = retryPolicy(FAST.connection_retry, lambda: 0.0)
        for attempt in range(1, 6):
            self.clock.advance(policy(attempt) - 0.01)
            self.net.flush()
            self.assertEqual(self.endpoint.attempts, attempt)
            self.clock.advance(0.01)
            self.net.flush()
            self.assertEqual(self.endpoint.attempts, attempt + 1)
        refusals = [line for line in self.logs.lines(LogLevel.error) if "belongs to cluster 'other'" in line]
        self.assertEqual(len(refusals), 6)
        self.assertFalse(self.logs.has("NoTransition"))

    def test_masterGoneAndBack(self) -> None:
        """
        A worker whose master restarts reconnects by itself once the master
        is back.
        """
        self.start()
        self.addCleanup(self.stop)
        link = self.net.connections.pop()
        self.endpoint.refuse = True
        link.serverTLS.transport.abortConnection()
        link.pump.flush()
        self.assertIsNone(self.link.connection)
        self.assertTrue(self.logs.has("Lost connection to master", LogLevel.error))
        self.assertFalse(self.logs.has("Keep-alive"), "a lost connection is not a keep-alive failure")
        for _ in range(3):
            self.clock.advance(FAST.connection_retry)
        self.assertIsNone(self.link.connection)
        self.endpoint.refuse = False
        self.clock.advance(FAST.connection_retry)
        self.net.flush()
        self.assertIsNotNone(self.link.connection)

    def test_retryPolicyIsCapped(self) -> None:
        """Waits grow and never exceed connection_retry plus a tenth of jitter."""
        policy = retryPolicy(10.0, lambda: 1.0)
        waits = [policy(n) for n in range(1, 30)]
        self.assertEqual(waits, sorted(waits))
        self.assertLessEqual(max(waits), 11.0)
        self.assertLess(waits[0], 2.0)


class FleetWatchTests(SynchronousTestCase):
    def test_silentWorkerDropped(self) -> None:
        """
        The master drops a worker whose keep-alives stopped for longer than
        max_allowed_time_without_keepalive, and only then.
        """
        clock = Clock()
        net = MemoryNetwork(clock)
        master = MasterHarness(clock)
        master.fleet.startService()
        self.addCleanup(master.fleet.stopService)
        logs = LogCapture(self)
        connection, joined = net.joinWorker(master, settings("node02"))
        self.successResultOf(joined)
        limit = FAST.max_allowed_time_without_keepalive
        clock.advance(limit)
        self.assertIn("node02", master.fleet.workers)
        clock.advance(FAST.check_worker_lastkeepalive)
        self.assertNotIn("node02", master.fleet.workers)
        self.assertTrue(connection.serverTLS.transport.disconnecting)
        self.assertTrue(logs.has("No keep-alive from worker node02", LogLevel.warn))


class _RefusingEndpoint:
    """A client endpoint whose every attempt fails, by default as a closed port refuses it."""

    def __init__(self, error: Exception | None = None) -> None:
        self.attempts = 0
        self.error = error or ConnectionRefusedError("Connection refused")

    def connect(self, factory):
        self.attempts += 1
        return fail(self.error)


class UnreachableMasterTests(SynchronousTestCase):
    def test_refusedAttemptsAreLoggedOnce(self) -> None:
        """
        A master that refuses connections is named in the log with the
        reason, once (then at debug level), while the worker keeps retrying.
        """
        clock = Clock()
        logs = LogCapture(self)
        endpoint = _RefusingEndpoint()
        workerSettings = settings("node02")
        link = MasterLink(workerSettings, endpoint, clock, jitter=lambda: 0.0)
        link.startService()
        self.addCleanup(link.stopService)
        for _ in range(20):
            clock.advance(1)
        self.assertGreater(endpoint.attempts, 3)
        errors = [line for line in logs.lines(LogLevel.error) if "Could not connect to master" in line]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(f"{workerSettings.masterAddress}:", errors[0])
        self.assertIn("connection refused. Retrying.", errors[0])
        self.assertGreater(len([line for line in logs.lines() if "Could not connect to master" in line]), 3)

    def test_reasonsAreWordsWithoutReprs(self) -> None:
        """
        Each reason a connection attempt fails for reads as words: no
        C{HostnameAddress(hostname=b'...')}, no doubled period before
        "Retrying".
        """
        cases = [
            (ConnectionRefusedError("Connection refused"), "connection refused"),
            (DNSLookupError("no results for hostname lookup: master.example."), "the name does not resolve (DNS lookup failed)"),
            (ConnectingCancelledError(HostnameAddress(b"master.example", 1516)), "no answer to the connection attempt"),
            (ConnectError("Connection refused."), "An error occurred while connecting: Connection refused"),
        ]
        for error, reason in cases:
            clock = Clock()
            logs = LogCapture(self)
            link = MasterLink(settings("node02"), _RefusingEndpoint(error), clock, jitter=lambda: 0.0)
            link.startService()
            clock.advance(1)
            link.stopService()
            (line,) = [line for line in logs.lines(LogLevel.error) if "Could not connect to master" in line]
            self.assertIn(f": {reason}. Retrying.", line)
            for repr_ in ("b'", "Address(", "Error(", ".."):
                self.assertNotIn(repr_, line)
