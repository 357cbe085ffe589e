"""
The node's Prometheus metrics: what each role shows, the live state read at
scrape time, the reactor's lag, and the bounds of the C{/metrics} port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from io import BytesIO
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.api.guard import ThrottledLog
from wazuhcluster.metrics import endpoint
from wazuhcluster.metrics.endpoint import HEADERS_TIMEOUT, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_PER_ADDRESS
from wazuhcluster.metrics.reactorlag import ReactorLagProbe
from wazuhcluster.metrics.registry import CONTENT_TYPE, NodeMetrics


def samples(metrics: NodeMetrics) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """The node's exposition, parsed: sample name -> labels -> value."""
    scraped: list[bytes] = []
    Deferred.fromCoroutine(metrics.scrape()).addCallback(scraped.append)
    assert scraped, "the scrape did not finish at once"
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(scraped[0].decode("utf-8")):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


class _Worker:
    def __init__(self, lastKeepAlive: float) -> None:
        self.lastKeepAlive = lastKeepAlive


class RoleTests(SynchronousTestCase):
    """A master and a worker show the metrics of their role, and every node's."""

    def test_master(self) -> None:
        metrics = NodeMetrics()
        metrics.describeNode("master-1", "wazuh", "master", "4.9.0")
        metrics.integritySyncEnded("worker1", "in_sync", 0.002)
        metrics.integritySyncEnded("worker1", "sent", 1.5)
        metrics.integritySyncEnded("worker2", "failed", 0.3)
        metrics.filesSent.labels(worker="worker1").inc(291)
        metrics.bytesSent.labels(worker="worker1").inc(4096)
        metrics.agentInfoUpdates.labels(worker="worker2").inc(3)
        clock = Clock()
        clock.advance(1000)
        workers = {"worker1": _Worker(990.0), "worker2": _Worker(1000.0)}
        metrics.watchWorkers(lambda: workers, clock.seconds)
        metrics.countAgents({"Active": 2, "Never connected": 1, "Disconnected": 1})
        found = samples(metrics)

        self.assertEqual(found["wazuhcluster_integrity_syncs_total"], {
            frozenset({("worker", "worker1"), ("result", "in_sync")}): 1,
            frozenset({("worker", "worker1"), ("result", "sent")}): 1,
            frozenset({("worker", "worker2"), ("result", "failed")}): 1,
        })
        self.assertEqual(found["wazuhcluster_integrity_sync_duration_seconds_count"][frozenset({("worker", "worker1")})], 2)
        self.assertAlmostEqual(
            found["wazuhcluster_integrity_sync_duration_seconds_sum"][frozenset({("worker", "worker1")})], 1.502
        )
        self.assertEqual(found["wazuhcluster_files_sent_total"], {frozenset({("worker", "worker1")}): 291})
        self.assertEqual(found["wazuhcluster_bytes_sent_total"], {frozenset({("worker", "worker1")}): 4096})
        self.assertEqual(found["wazuhcluster_agent_info_updates_total"], {frozenset({("worker", "worker2")}): 3})
        self.assertEqual(found["wazuhcluster_workers_connected"], {frozenset(): 2})
        self.assertEqual(found["wazuhcluster_keepalive_age_seconds"], {
            frozenset({("worker", "worker1")}): 10.0, frozenset({("worker", "worker2")}): 0.0,
        })
        # Every status is shown, 0 when no agent has it.
        self.assertEqual(found["wazuhcluster_agents"], {
            frozenset({("status", "Active")}): 2, frozenset({("status", "Disconnected")}): 1,
            frozenset({("status", "Never connected")}): 1, frozenset({("status", "Pending")}): 0,
        })
        self.assertEqual(found["wazuhcluster_node_info"], {
            frozenset({("node", "master-1"), ("cluster", "wazuh"), ("type", "master"), ("version", "4.9.0")}): 1,
        })
        self.assertGreater(found["process_resident_memory_bytes"][frozenset()], 0)
        for workerOnly in ("wazuhcluster_master_connected", "wazuhcluster_reconnects_total",
                           "wazuhcluster_files_received_total", "wazuhcluster_last_sync_timestamp_seconds"):
            self.assertNotIn(workerOnly, found)
        self.assertFalse([name for name in found if name.endswith("_created")])

        # The state is read at each scrape: a worker that leaves is gone at once.
        del workers["worker2"]
        clock.advance(5)
        found = samples(metrics)
        self.assertEqual(found["wazuhcluster_workers_connected"], {frozenset(): 1})
        self.assertEqual(found["wazuhcluster_keepalive_age_seconds"], {frozenset({("worker", "worker1")}): 15.0})

    def test_worker(self) -> None:
        metrics = NodeMetrics()
        metrics.describeNode("worker1", "wazuh", "worker", "4.9.0")
        joined = [True]
        metrics.watchMaster(lambda: joined[0])
        metrics.filesReceived.inc(50)
        metrics.lastSync.set(1_700_000_000.5)
        found = samples(metrics)
        self.assertEqual(found["wazuhcluster_master_connected"], {frozenset(): 1})
        self.assertEqual(found["wazuhcluster_reconnects_total"], {frozenset(): 0})
        self.assertEqual(found["wazuhcluster_files_received_total"], {frozenset(): 50})
        self.assertEqual(found["wazuhcluster_last_sync_timestamp_seconds"], {frozenset(): 1_700_000_000.5})
        for masterOnly in ("wazuhcluster_workers_connected", "wazuhcluster_agents", "wazuhcluster_files_sent_total",
                           "wazuhcluster_integrity_syncs_total", "wazuhcluster_keepalive_age_seconds"):
            self.assertNotIn(masterOnly, found)
        joined[0] = False
        self.assertEqual(samples(metrics)["wazuhcluster_master_connected"], {frozenset(): 0})

    def test_nodes_do_not_share(self) -> None:
        """Two nodes in one process (the tests') each show only their own figures."""
        one, two = NodeMetrics(), NodeMetrics()
        one.describeNode("worker1", "wazuh", "worker", "4.9.0")
        two.describeNode("worker2", "wazuh", "worker", "4.9.0")
        one.filesReceived.inc(7)
        self.assertEqual(samples(one)["wazuhcluster_files_received_total"], {frozenset(): 7})
        self.assertEqual(samples(two)["wazuhcluster_files_received_total"], {frozenset(): 0})
        self.assertRaises(RuntimeError, one.describeNode, "x", "wazuh", "worker", "4.9.0")

    def test_thread_pool(self) -> None:
        """The pool's queue and busy threads, read from the pool itself."""
        pool = ThreadPool(minthreads=0, maxthreads=1)
        metrics = NodeMetrics()
        metrics.describeNode("master", "wazuh", "master", "4.9.0", lambda: pool)
        for _ in range(3):
            pool.callInThread(lambda: None)  # not started: they wait
        found = samples(metrics)
        self.assertEqual(found["wazuhcluster_threadpool_queue_length"], {frozenset(): 3})
        self.assertEqual(found["wazuhcluster_threadpool_busy_threads"], {frozenset(): 0})

    def test_before_scrape(self) -> None:
        """The refreshes run before the page is made; a slow one holds the scrape, not the reactor."""
        metrics = NodeMetrics()
        metrics.describeNode("master", "wazuh", "master", "4.9.0")
        waiting: Deferred[None] = Deferred()

        async def refresh() -> None:
            await waiting
            metrics.countAgents({"Pending": 1})

        metrics.beforeScrape.append(refresh)
        pages: list[bytes] = []
        Deferred.fromCoroutine(metrics.scrape()).addCallback(pages.append)
        self.assertEqual(pages, [])
        waiting.callback(None)
        self.assertIn(b'wazuhcluster_agents{status="Pending"} 1.0', pages[0])


class ReactorLagTests(SynchronousTestCase):
    def test_lag_observed(self) -> None:
        clock = Clock()
        metrics = NodeMetrics()
        metrics.describeNode("master", "wazuh", "master", "4.9.0")
        probe = ReactorLagProbe(clock, metrics.reactorLag)
        probe.startService()
        clock.advance(0.1)  # on time
        clock.advance(0.6)  # the reactor was held: 0.5 s late
        clock.advance(0.1)
        found = samples(metrics)
        self.assertEqual(found["wazuhcluster_reactor_lag_seconds_count"], {frozenset(): 3})
        self.assertAlmostEqual(found["wazuhcluster_reactor_lag_seconds_sum"][frozenset()], 0.5)
        self.assertEqual(found["wazuhcluster_reactor_lag_seconds_bucket"][frozenset({("le", "0.001")})], 2)
        self.assertEqual(found["wazuhcluster_reactor_lag_seconds_bucket"][frozenset({("le", "0.5")})], 3)
        probe.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class EndpointTests(SynchronousTestCase):
    """The HTTP side of C{/metrics}, on a transport in memory."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.patch(ThrottledLog, "log", Logger(observer=self.events.append))
        self.metrics = NodeMetrics()
        self.metrics.describeNode("master", "wazuh", "master", "4.9.0")
        self.service = endpoint.metricsService(self.clock, self.metrics, "127.0.0.1", 9109)
        self.factory = self.service.factory

    def connect(self, host: str = "10.0.0.1") -> tuple[Any, StringTransport]:
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        return protocol, transport

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_scrape(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"Content-Type: " + CONTENT_TYPE.encode(), head)
        self.assertIn(b"wazuhcluster_node_info{", body)
        self.assertFalse(transport.disconnecting)  # kept alive for the next scrape

    def test_only_get_of_metrics(self) -> None:
        for request, status in ((b"GET / HTTP/1.1", b"404"), (b"POST /metrics HTTP/1.1", b"405"),
                                (b"GET /other HTTP/1.1", b"404"), (b"GET /metrics/x HTTP/1.1", b"404"),
                                (b"HEAD /metrics HTTP/1.1", b"200")):
            protocol, transport = self.connect()
            protocol.dataReceived(request + b"\r\nHost: node\r\nContent-Length: 0\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 " + status), transport.value()[:40])

    def test_body_is_not_kept(self) -> None:
        """A body past MAX_BODY_BYTES closes the connection; nothing of it goes to a file."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /metrics HTTP/1.1\r\nHost: node\r\nContent-Length: 1000000000\r\n\r\n")
        protocol.dataReceived(b"x" * (MAX_BODY_BYTES + 1))
        self.assertTrue(transport.disconnected)
        request = protocol.wrappedProtocol.requests[0]
        self.assertLessEqual(len(request.content.getvalue()), MAX_BODY_BYTES)
        self.assertIsInstance(request.content, BytesIO)
        self.assertEqual(self.lines(), ["Metrics client 10.0.0.1: connection closed: a request with a body."])

    def test_slow_headers(self) -> None:
        """Headers not complete in HEADERS_TIMEOUT: closed, and said once naming the peer."""
        protocol, transport = self.connect("10.0.0.9")
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHo")
        self.clock.advance(HEADERS_TIMEOUT - 1)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.lines(), [
            f"Metrics client 10.0.0.9: connection closed: no complete request within {HEADERS_TIMEOUT:g} seconds."
        ])

    def test_idle_connection_closed_quietly(self) -> None:
        """A kept-alive connection idle past the deadline is closed without a warning."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
        self.clock.advance(HEADERS_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.lines(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_caps(self) -> None:
        opened = []
        for i in range(MAX_CONNECTIONS + 3):
            host = "10.0.0.1" if i <= MAX_PER_ADDRESS else f"10.0.1.{i}"
            address = IPv4Address("TCP", host, 40000 + i)
            protocol = self.factory.buildProtocol(address)
            if protocol is not None:
                protocol.makeConnection(StringTransport(peerAddress=address))
            opened.append(protocol is not None)
        self.assertEqual(opened.count(False), 3)  # one over the per-address cap, two over the total
        self.assertEqual(opened[MAX_PER_ADDRESS], False)
        self.assertIn(
            f"Metrics client 10.0.0.1: connection closed: it has {MAX_PER_ADDRESS} open"
            f" (at most {MAX_PER_ADDRESS} per address).",
            self.lines(),
        )
        self.assertTrue(any("the metrics port has 32 open" in line for line in self.lines()))


class ImportTests(SynchronousTestCase):
    def test_no_reactor_installed_by_import(self) -> None:
        """
        Building a node imports the metrics without installing a reactor
        (prometheus_client's Twisted helper would): twistd installs its own.
        """
        code = (
            "import sys, wazuhcluster.node, wazuhcluster.metrics.endpoint;"
            "sys.exit(1 if 'twisted.internet.reactor' in sys.modules else 0)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        self.assertEqual(result.returncode, 0, result.stderr)
