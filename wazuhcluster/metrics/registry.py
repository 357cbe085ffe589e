"""
The Prometheus metrics of one node, in a registry of its own.

Every part of the daemon records into the node's one L{NodeMetrics}, which
travels with the node's counters (L{wazuhcluster.stats.NodeStats.metrics});
a part built alone, in a test, records into its own.  Recording is an
addition under prometheus_client's lock: it costs well under a microsecond
and never waits for I/O.

What is a state rather than an event (the workers connected, the age of
their keep-alives, the agents by status, the thread pool's queue) is read
when Prometheus scrapes, from the live objects the builder points this at.
The agent counts come from the master's L{StatusCounts}, which each status
taken from a worker moves and each full agent listing rebuilds; a scrape
makes a listing (in a thread) only when none was made for
L{AGENT_COUNTS_RESYNC} seconds.

A registry of its own, not prometheus_client's global one: a test process
runs several nodes, and each must show only its own figures.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

__all__ = ["AGENT_COUNTS_RESYNC", "AGENT_STATUSES", "CONTENT_TYPE", "NodeMetrics"]

# No C{*_created} series beside each counter and histogram: nothing reads
# them (the text format has no use for them) and they double a scrape's size.
disable_created_metrics()

#: The Prometheus text format (what C{GET /metrics} answers).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The agent statuses, as C{cluster_control -a} writes them; each is always shown.
AGENT_STATUSES = ("Active", "Disconnected", "Never connected", "Pending")

#: Seconds after which a scrape rebuilds the agent counts from a full listing
#: (what the master does not see itself: statuses written by other programs).
AGENT_COUNTS_RESYNC = 300.0

#: Integrity checks take from a millisecond (in sync: two digests compared)
#: to minutes (a new worker's 50,000 files).
SYNC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: A healthy reactor answers a timer within a millisecond or two; a second
#: is a frozen node.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: API answers: from a cached page (milliseconds) to a 50,000-agent listing.
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NodeMetrics:
    """
    The metrics of one node.

    The event metrics are attributes, recorded by the parts of the daemon;
    L{describeNode} registers those of the node's role (a worker shows no
    per-worker counters, a master no reconnections) with the live state
    and the C{process_*} metrics, and is called once by the node's builder.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The master's, per worker.
        self.integritySyncs = Counter(
            "wazuhcluster_integrity_syncs", "Integrity syncs with a worker, by how they ended",
            ["worker", "result"], registry=None,
        )
        self.integritySyncDuration = Histogram(
            "wazuhcluster_integrity_sync_duration_seconds",
            "Time the master took for one integrity check of a worker, transfer included",
            ["worker"], buckets=SYNC_BUCKETS, registry=None,
        )
        self.filesSent = Counter(
            "wazuhcluster_files_sent", "Files the master sent to a worker", ["worker"], registry=None
        )
        self.bytesSent = Counter(
            "wazuhcluster_bytes_sent", "Compressed bytes of files the master sent to a worker", ["worker"],
            registry=None,
        )
        self.agentInfoUpdates = Counter(
            "wazuhcluster_agent_info_updates", "Agent statuses the master took from a worker", ["worker"],
            registry=None,
        )
        # The worker's.
        self.reconnects = Counter(
            "wazuhcluster_reconnects", "Times the worker joined the master again after its first join",
            registry=None,
        )
        self.lastSync = Gauge(
            "wazuhcluster_last_sync_timestamp_seconds",
            "When the worker last completed an integrity sync with the master (seconds since the epoch)",
            registry=None,
        )
        self.filesReceived = Counter(
            "wazuhcluster_files_received", "Files the worker received from the master and put in place",
            registry=None,
        )
        # Every node's.
        self.apiRequests = Counter(
            "wazuhcluster_api_requests", "API requests answered, by method and HTTP status", ["method", "code"],
            registry=None,
        )
        self.apiRequestDuration = Histogram(
            "wazuhcluster_api_request_duration_seconds", "Time from an API request's first line to its answer",
            buckets=API_BUCKETS, registry=None,
        )
        self.reactorLag = Histogram(
            "wazuhcluster_reactor_lag_seconds", "How late a timer due every 0.1 s fired on the event loop",
            buckets=LAG_BUCKETS, registry=None,
        )
        #: Awaited before each scrape (the builder adds the agent count's refresh).
        self.beforeScrape: list[Callable[[], Awaitable[object]]] = []
        self._state = _LiveState()
        self._described = False

    def describeNode(
        self, node: str, cluster: str, nodeType: str, version: str, threadPool: Callable[[], Any] | None = None
    ) -> None:
        """Register the metrics of a C{nodeType} ("master" or "worker") node."""
        if self._described:
            raise RuntimeError("the node's metrics are already described")
        self._described = True
        self._state.info = {"node": node, "cluster": cluster, "type": nodeType, "version": version}
        self._state.threadPool = threadPool
        if nodeType == "master":
            mine: Iterable[Any] = (
                self.integritySyncs, self.integritySyncDuration, self.filesSent, self.bytesSent, self.agentInfoUpdates,
            )
        else:
            mine = (self.reconnects, self.lastSync, self.filesReceived)
        for metric in (*mine, self.apiRequests, self.apiRequestDuration, self.reactorLag, self._state):
            self.registry.register(metric)
        ProcessCollector(registry=self.registry)

    # What the builder points the live state at.

    def watchWorkers(self, workers: Callable[[], Mapping[str, Any]], now: Callable[[], float]) -> None:
        """The master's joined workers by name (each with C{lastKeepAlive}), and its clock."""
        self._state.workers, self._state.now = workers, now

    def watchMaster(self, connected: Callable[[], bool]) -> None:
        """Whether the worker is joined to its master."""
        self._state.masterConnected = connected

    def countAgents(self, counts: Mapping[str, int]) -> None:
        """How many agents the master knows in each status."""
        self._state.agents = dict(counts)

    # Recording, for the parts of the daemon.

    def integritySyncEnded(self, worker: str, result: str, seconds: float) -> None:
        """One integrity check of C{worker} ended: C{in_sync}, C{sent} or C{failed}."""
        self.integritySyncs.labels(worker=worker, result=result).inc()
        self.integritySyncDuration.labels(worker=worker).observe(max(seconds, 0.0))

    def apiAnswered(self, method: str, code: int, seconds: float) -> None:
        self.apiRequests.labels(method=method, code=str(code)).inc()
        self.apiRequestDuration.observe(max(seconds, 0.0))

    # Exposition.

    async def scrape(self) -> bytes:
        """The node's metrics in the Prometheus text format, after the pre-scrape refreshes."""
        for refresh in self.beforeScrape:
            await refresh()
        return generate_latest(self.registry)


class _LiveState:
    """A collector of what is read at scrape time from the live node."""

    def __init__(self) -> None:
        self.info: dict[str, str] = {}
        self.threadPool: Callable[[], Any] | None = None
        self.workers: Callable[[], Mapping[str, Any]] | None = None
        self.now: Callable[[], float] = lambda: 0.0
        self.masterConnected: Callable[[], bool] | None = None
        self.agents: dict[str, int] | None = None

    def describe(self) -> list[Metric]:
        # Only the names: prometheus_client checks them for clashes at registration.
        return [
            GaugeMetricFamily(name, "") for name in (
                "wazuhcluster_node_info", "wazuhcluster_threadpool_queue_length",
                "wazuhcluster_threadpool_busy_threads", "wazuhcluster_workers_connected",
                "wazuhcluster_keepalive_age_seconds", "wazuhcluster_agents", "wazuhcluster_master_connected",
            )
        ]

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "wazuhcluster_node_info", "The node: always 1, with its name, cluster, type and version as labels",
            labels=list(self.info),
        )
        info.add_metric(list(self.info.values()), 1)
        yield info
        pool = self.threadPool() if self.threadPool is not None else None
        if pool is not None:
            yield GaugeMetricFamily(
                "wazuhcluster_threadpool_queue_length",
                "Blocking jobs (hashing, file writes) waiting for a thread", value=pool.q.qsize(),
            )
            yield GaugeMetricFamily(
                "wazuhcluster_threadpool_busy_threads", "Threads of the pool running a job",
                value=len(pool.working),
            )
        if self.workers is not None:
            workers = self.workers()
            yield GaugeMetricFamily("wazuhcluster_workers_connected", "Workers joined to the master", value=len(workers))
            ages = GaugeMetricFamily(
                "wazuhcluster_keepalive_age_seconds", "Seconds since a joined worker's last keep-alive",
                labels=["worker"],
            )
            now = self.now()
            for name, connection in sorted(workers.items()):
                ages.add_metric([name], max(now - connection.lastKeepAlive, 0.0))
            yield ages
        if self.agents is not None:
            agents = GaugeMetricFamily(
                "wazuhcluster_agents", "Agents the master knows, by status (as cluster_control -a shows them)",
                labels=["status"],
            )
            for status in AGENT_STATUSES:
                agents.add_metric([status], self.agents.get(status, 0))
            yield agents
        if self.masterConnected is not None:
            yield GaugeMetricFamily(
                "wazuhcluster_master_connected", "1 while the worker is joined to its master, else 0",
                value=1 if self.masterConnected() else 0,
            )
