"""
C{GET /metrics}: the node's metrics in the Prometheus text format, served by
the node's own reactor on C{cluster.metrics_bind}:C{cluster.metrics_port}.

The port has no credentials (as Prometheus' exporters): it listens on
loopback unless the operator says otherwise, and whoever reaches it is held
to small bounds, each logged in one line naming the peer when it trips:

  - at most L{MAX_CONNECTIONS} connections, L{MAX_PER_ADDRESS} from one
    address (more are closed when accepted);
  - a connection sends its request's headers within L{HEADERS_TIMEOUT}
    seconds of opening or of its previous answer, else it is closed (an
    idle keep-alive connection too: Prometheus opens another);
  - a request has no body: one is read into memory up to
    L{MAX_BODY_BYTES}, then the connection is closed (nothing goes to disk);
  - only C{GET} and C{HEAD} of C{/metrics}; anything else is a 404 or 405.

prometheus_client's own Twisted resource is not used: it imports the
global reactor when imported, and renders in a thread of the pool the
node's hashing needs.  Rendering here is on the reactor: it reads
counters, which takes a few milliseconds (bench/metrics.py).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..api.guard import ConnectionLimiter, ThrottledLog
from ..api.server import tcpServerEndpoint
from .registry import CONTENT_TYPE, NodeMetrics

__all__ = ["HEADERS_TIMEOUT", "MAX_BODY_BYTES", "MAX_CONNECTIONS", "MAX_PER_ADDRESS", "metricsService"]

MAX_CONNECTIONS = 32
MAX_PER_ADDRESS = 8
HEADERS_TIMEOUT = 10.0
MAX_BODY_BYTES = 4096


class _MetricsLog(ThrottledLog):
    logTag = "[Metrics]"


class MetricsPage(Resource):
    """The exposition of one node's metrics."""

    isLeaf = True
    log = Logger()
    logTag = "[Metrics]"

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> Any:
        def answer(body: bytes) -> None:
            if request.channel is None:
                return
            request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
            request.setHeader(b"Content-Length", b"%d" % len(body))
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        def failed(failure: Any) -> None:
            self.log.failure("Could not gather the node's metrics", failure)
            if request.channel is None:
                return
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(b"could not gather the metrics; see cluster.log\n")
            request.finish()

        Deferred.fromCoroutine(self.metrics.scrape()).addCallbacks(answer, failed)
        return NOT_DONE_YET

    render_HEAD = render_GET

    def render(self, request: Request) -> Any:
        if request.postpath:
            return _plain(request, 404, b"the metrics are at /metrics\n")
        if request.method in (b"GET", b"HEAD"):
            return super().render(request)
        return _plain(request, 405, b"only GET and HEAD of /metrics\n", Allow=b"GET, HEAD")


class _Root(Resource):
    """Anything but C{/metrics}: a 404 that says where the metrics are."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self

    def render(self, request: Request) -> bytes:
        return _plain(request, 404, b"the metrics are at /metrics\n")


def _plain(request: Request, code: int, text: bytes, **headers: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    for name, value in headers.items():
        request.setHeader(name.encode("ascii"), value)
    return text


class _MetricsRequest(Request):
    """A request whose body (there should be none) stays in memory and small."""

    _received = 0

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY_BYTES:
            channel = self.channel
            if channel is not None and channel.transport is not None:
                channel.site.throttled.warn("body", channel.peerAddress(), "connection closed: a request with a body.")
                channel.transport.abortConnection()
            return
        self.content.write(data)


class _MetricsChannel(HTTPChannel):
    """An HTTP connection that must send each request's headers in time."""

    site: "_MetricsSite"
    _deadline: Any = None
    #: Whether bytes of a request came since the deadline was armed.
    _started = False

    def peerAddress(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return str(getattr(peer, "host", peer))

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._started = False
        self._deadline = self.site.reactor.callLater(HEADERS_TIMEOUT, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if self.transport is not None:
            if self._started:
                # A request started and did not finish its headers: a slow
                # or stuck client.  An idle keep-alive connection is closed
                # quietly.
                self.site.throttled.warn(
                    "headers", self.peerAddress(),
                    f"connection closed: no complete request within {HEADERS_TIMEOUT:g} seconds.",
                )
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self._started = True
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        self._arm()

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        super().connectionLost(reason)


class _MetricsSite(Site):
    requestFactory = _MetricsRequest

    def __init__(self, metrics: NodeMetrics, reactor: Any) -> None:
        root = _Root()
        root.putChild(b"metrics", MetricsPage(metrics))
        super().__init__(root, timeout=None, reactor=reactor)
        self.throttled = _MetricsLog(reactor, prefix="Metrics client {who}: ")
        self.displayTracebacks = False
        self.noisy = False

    def protocol(self) -> _MetricsChannel:  # type: ignore[override]
        return _MetricsChannel()

    def log(self, request: Any) -> None:
        """No access log: cluster.log is for the cluster."""


class _MetricsLimiter(ConnectionLimiter):
    serviceName = "the metrics port"
    totalSetting = f"at most {MAX_CONNECTIONS}"
    perAddressSetting = f"at most {MAX_PER_ADDRESS} per address"


class _MetricsService(StreamServerEndpointService):
    log = Logger()
    logTag = "[Metrics]"

    def __init__(self, endpoint: Any, factory: Any, where: str) -> None:
        super().__init__(endpoint, factory)
        self.where = where

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: Any) -> Any:
        self.log.info("Metrics served on {where}.", where=self.where)
        return port


def metricsService(reactor: Any, metrics: NodeMetrics, host: str, port: int) -> StreamServerEndpointService:
    """The service listening for Prometheus on C{host}:C{port}, ready to start."""
    site = _MetricsSite(metrics, reactor)
    limiter = _MetricsLimiter(site, MAX_CONNECTIONS, MAX_PER_ADDRESS, site.throttled)
    where = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    service = _MetricsService(tcpServerEndpoint(reactor, host, port), limiter, where)
    service._raiseSynchronously = True
    return service
