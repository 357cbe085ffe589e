"""
The API's HTTP layer: what a client may take before and while it is served.

  - Connections: at most C{access.max_connections} at once (and never more
    than an eighth of the process's descriptor limit, so that the cluster
    port, the control socket and file syncing always have descriptors), at
    most C{access.max_connections_per_address} from one address.  One over
    is closed as soon as it is accepted.
  - Time: a request's headers must all be in within C{intervals.headers_timeout}
    seconds of its first byte (or of the end of the previous answer on that
    connection), the whole request, body included, within
    C{intervals.request_timeout}.  Late: 408 and the connection is closed;
    an idle keep-alive connection is simply closed.
  - Credentials: checked when the headers are in, before any of the body
    is kept (L{wazuhcluster.api.authn}).  Refused: 401 (or 429) at once, the
    rest of the body read and thrown away for at most L{LINGER} seconds so
    that the client sees the answer, then the connection is closed.  While
    a password is verified, at most L{HELD_BODY} bytes of the body wait in
    memory and the connection is paused.
  - Size: a body over C{max_upload_size} (C{Content-Length}, or counted when
    chunked) is refused with 413 as soon as that is known; nothing more of
    it is kept.

Every refusal is an answer in the API's shape, C{{"error": CODE,
"message": ...}}, and one log line naming the client's address (at most one
a minute per address and kind, with the number left out).
"""

from __future__ import annotations

import json
import resource
from io import BytesIO
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import HTTPChannel, _getContentFile
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from .authn import BODY_TOO_LARGE, REQUEST_TIMEOUT, Authenticator, Refusal
from .settings import ApiLimits

if TYPE_CHECKING:
    from ..metrics.registry import NodeMetrics

#: Bytes of a body kept in memory while its sender's password is verified.
HELD_BODY = 64 * 1024

#: Seconds a refused request's body is still read (and thrown away) so that
#: the client reads the answer instead of a reset.
LINGER = 1.0

#: Seconds a closing connection gets to go before it is cut.
CLOSE_GRACE = 5.0

#: The share of the descriptor limit the API may hold at most.
FD_SHARE = 8

_REASONS = {401: b"Unauthorized", 408: b"Request Timeout", 413: b"Payload Too Large", 429: b"Too Many Requests"}


class ThrottledLog:
    """
    One log line per peer and kind a minute at most, then the number left
    out.  C{prefix} names the peer (C{{who}}) before the text.
    """

    log = Logger()
    logTag = "[API]"
    PERIOD = 60.0
    MAX_KEYS = 4096

    def __init__(self, clock: Any, prefix: str = "API client {who}: ") -> None:
        self.clock = clock
        self.prefix = prefix
        self._last: dict[tuple[str, str], list[float]] = {}

    def warn(self, kind: str, address: str, text: str) -> None:
        now = self.clock.seconds()
        entry = self._last.get((kind, address))
        if entry is not None and now < entry[0] + self.PERIOD:
            entry[1] += 1
            return
        left = int(entry[1]) if entry is not None else 0
        if len(self._last) >= self.MAX_KEYS:
            self._last.clear()
        self._last[(kind, address)] = [now, 0]
        more = f" ({left} more like it in the last minute)" if left else ""
        self.log.warn("{prefix}{text}{more}", prefix=self.prefix.format(who=address), text=text, more=more)


def effectiveMaxConnections(limits: ApiLimits) -> int:
    """C{max_connections}, lowered to an eighth of the descriptor limit if that is less."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(1, min(limits.max_connections, soft // FD_SHARE))


def raiseFileLimit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; the limits before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
    return soft, hard


class GuardedRequest(Request):
    """A request whose body is kept only once its sender is known, and only so much."""

    #: The user the credentials name, once verified.
    apiUser: str | None = None
    _received = 0
    _waitingToProcess = False

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        #: When the request's first line arrived (for its duration's metric).
        self.arrivedAt = channel.site.reactor.seconds()

    def gotLength(self, length: int | None) -> None:
        if self.apiUser is None:
            self.content = BytesIO()  # at most HELD_BODY (+ one read) while verifying
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        self._received += len(data)
        if channel is None or channel.refused:
            return
        if self._received > channel.limits.max_upload_size:
            channel.refuse(self, _tooLarge(channel.limits))
            return
        self.content.write(data)
        if self.apiUser is None and self._received > HELD_BODY:
            channel.pauseForAuthentication()

    def keepBody(self) -> None:
        """Move the body held while verifying to where a verified body goes."""
        held = self.content
        if not isinstance(held, BytesIO):
            return
        length = self.channel.length if self.channel is not None else None
        if self._waitingToProcess or (length is not None and length < 100000):
            return
        self.content = _getContentFile(None)
        self.content.write(held.getvalue())

    def process(self) -> None:
        if self.apiUser is None:
            self._waitingToProcess = True  # process() again once verified
            return
        self._waitingToProcess = False
        super().process()


def _tooLarge(limits: ApiLimits) -> Refusal:
    return Refusal(
        413, BODY_TOO_LARGE,
        f"Invalid request. The request body is larger than {limits.max_upload_size} bytes "
        f"(max_upload_size in api.yaml)",
    )


class GuardedChannel(HTTPChannel):
    """An HTTP connection held to the limits of the module's docstring."""

    site: "GuardedSite"
    refused = False
    _headersCall: Any = None
    _requestCall: Any = None
    _closeCall: Any = None
    _pausedForAuthentication = False
    _continueLater = False
    _started = False

    @property
    def limits(self) -> ApiLimits:
        return self.site.limits

    def _address(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return str(getattr(peer, "host", peer))

    def connectionMade(self) -> None:
        super().connectionMade()
        self._armDeadlines()

    def _armDeadlines(self) -> None:
        self._cancelDeadlines()
        self._started = False
        later = self.site.reactor.callLater
        self._headersCall = later(self.limits.headers_timeout, self._late, "headers", "headers_timeout")
        self._requestCall = later(self.limits.request_timeout, self._late, "request", "request_timeout")

    def _cancelDeadlines(self) -> None:
        for call in (self._headersCall, self._requestCall):
            if call is not None and call.active():
                call.cancel()
        self._headersCall = self._requestCall = None

    def _late(self, what: str, setting: str) -> None:
        if what == "headers":
            self._headersCall = None
        else:
            self._requestCall = None
        if self.refused or self._handlingRequest:
            return
        if not self._started:
            self._close()  # an idle keep-alive connection: just closed
            return
        seconds = getattr(self.limits, setting)
        self.site.throttled.warn(
            "late", self._address(),
            f"its request's {what} did not arrive within {seconds:g} s (intervals.{setting}); closed.",
        )
        refusal = Refusal(
            408, REQUEST_TIMEOUT, f"The request did not arrive in time: its {what} took over {seconds:g} s"
        )
        self._answerAndClose(refusal, linger=False)

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # thrown away: a refused body is never kept
        self._started = True
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        if self._headersCall is not None and self._headersCall.active():
            self._headersCall.cancel()
        self._headersCall = None
        request = self.requests[-1]
        authorization = request.requestHeaders.getRawHeaders(b"authorization", [None])[0]
        outcome: list[Any] = []
        d = self.site.authenticator.authenticate(self._address(), authorization)
        d.addBoth(lambda result: outcome.append(result))
        if outcome:
            self._authenticated(request, outcome[0], pending=False)
            return
        super().allHeadersReceived()  # the body is held (GuardedRequest.gotLength)
        d.addBoth(lambda _: self._authenticated(request, outcome[0], pending=True))

    def _send100Continue(self) -> None:
        request = self.requests[-1] if self.requests else None
        if request is not None and request.apiUser is None:
            self._continueLater = True  # once the credentials are known good
        else:
            super()._send100Continue()

    def _authenticated(self, request: GuardedRequest, result: Any, pending: bool) -> None:
        if self.refused or self.transport is None or request.channel is None and pending:
            return
        if not isinstance(result, str):
            refusal = result.value if hasattr(result, "value") else result
            if not isinstance(refusal, Refusal):
                refusal = Refusal(500, 3, "Internal error")
            if refusal.status == 429:
                self.site.throttled.warn("blocked", self._address(), "login refused: too many failed attempts.")
            self.refuse(request, refusal)
            return
        if self.length is not None and self.length > self.limits.max_upload_size:
            self.refuse(request, _tooLarge(self.limits))
            return
        request.apiUser = result
        if not pending:
            super().allHeadersReceived()
            return
        request.keepBody()
        if self._pausedForAuthentication:
            self._pausedForAuthentication = False
            if not self._handlingRequest:
                self._networkProducer.resumeProducing()
        if self._continueLater:
            self._continueLater = False
            super()._send100Continue()
        if request._waitingToProcess:
            request.process()

    def pauseForAuthentication(self) -> None:
        if not self._pausedForAuthentication:
            self._pausedForAuthentication = True
            self._networkProducer.pauseProducing()

    def allContentReceived(self) -> None:
        if self.refused:
            return
        if self._requestCall is not None and self._requestCall.active():
            self._requestCall.cancel()
        self._requestCall = None
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        self._armDeadlines()  # for the next request on this connection
        super().requestDone(request)

    def refuse(self, request: GuardedRequest, refusal: Refusal) -> None:
        """Answer C{refusal} now, keep nothing more of this connection's data, and close it."""
        if refusal.status == 413:
            self.site.throttled.warn("large", self._address(), f"refused a body over {self.limits.max_upload_size} bytes.")
        self._answerAndClose(refusal, linger=True)

    def _answerAndClose(self, refusal: Refusal, linger: bool) -> None:
        self.refused = True
        self._cancelDeadlines()
        body = json.dumps(refusal.body(), separators=(",", ":")).encode("utf-8")
        head = [
            b"HTTP/1.1 %d %s" % (refusal.status, _REASONS.get(refusal.status, b"Error")),
            b"Content-Type: application/json; charset=utf-8",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        if refusal.status == 401:
            head.append(b'WWW-Authenticate: basic realm="wazuh"')
        for request in self.requests:
            if request.content is not None:
                request.content.close()
                request.content = BytesIO()
        if self.requests:
            # The method as the request line gave it: the request has none
            # until its body is in.
            method = getattr(self, "_command", None) or self.requests[-1].method
            self.site.answered(method, refusal.status, self.requests[-1].arrivedAt)
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if self._pausedForAuthentication or self._handlingRequest:
            self._pausedForAuthentication = False
            self._networkProducer.resumeProducing()  # read (and drop) while lingering
        if linger and not self._bodyDone():
            self._closeCall = self.site.reactor.callLater(LINGER, self._close)
        else:
            self._close()

    def _bodyDone(self) -> bool:
        return self._transferDecoder is None

    def _close(self) -> None:
        if self.transport is None:
            return
        self.transport.loseConnection()
        self._closeCall = self.site.reactor.callLater(CLOSE_GRACE, self.transport.abortConnection)

    def connectionLost(self, reason: Any) -> None:
        self._cancelDeadlines()
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        super().connectionLost(reason)


class GuardedSite(Site):
    """The API's site: connections are L{GuardedChannel}s, requests L{GuardedRequest}s."""

    requestFactory = GuardedRequest

    def __init__(self, resource: IResource, authenticator: Authenticator, limits: ApiLimits, reactor: Any) -> None:
        super().__init__(resource, timeout=None, reactor=reactor)
        self.authenticator = authenticator
        self.limits = limits
        self.throttled = ThrottledLog(reactor)
        self.displayTracebacks = False
        self.noisy = False
        #: Where answered requests are counted (the node's metrics), if anywhere.
        self.metrics: NodeMetrics | None = None

    def protocol(self) -> GuardedChannel:  # type: ignore[override]
        return GuardedChannel()

    def log(self, request: Any) -> None:
        """No access log (cluster.log is for the cluster): the request is counted."""
        self.answered(request.method, request.code, request.arrivedAt)

    def answered(self, method: bytes, code: int, arrivedAt: float) -> None:
        """Record an answered request in the node's metrics."""
        if self.metrics is not None:
            name = method.decode("ascii") if method in _METHODS else "other"
            self.metrics.apiAnswered(name, code, self.reactor.seconds() - arrivedAt)


#: The methods counted by name; any other is counted as "other" (a stranger
#: choosing a method must not grow the metrics).
_METHODS = frozenset({b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"})


class _Counted(ProtocolWrapper):
    address = ""


class ConnectionLimiter(WrappingFactory):
    """
    Wraps the API's factory (its TLS wrapper when HTTPS is on): connections
    over the total or per-address cap are closed as soon as they are
    accepted, before they cost a TLS handshake or a buffer.
    """

    protocol = _Counted
    noisy = False

    #: What the log lines call the service, and the settings of its two caps.
    serviceName = "the API"
    totalSetting = "access.max_connections"
    perAddressSetting = "access.max_connections_per_address"

    def __init__(self, wrapped: Any, maxConnections: int, maxPerAddress: int, throttled: ThrottledLog) -> None:
        super().__init__(wrapped)
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
        self.throttled = throttled
        self.perAddress: dict[str, int] = {}
        self.total = 0

    def buildProtocol(self, addr: IAddress) -> Any:
        address = str(getattr(addr, "host", addr))
        if self.total >= self.maxConnections:
            self.throttled.warn(
                "connections", address,
                f"connection closed: {self.serviceName} has {self.total} open ({self.totalSetting}).",
            )
            return None
        if self.perAddress.get(address, 0) >= self.maxPerAddress:
            self.throttled.warn(
                "connections", address,
                f"connection closed: it has {self.maxPerAddress} open ({self.perAddressSetting}).",
            )
            return None
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.address = address
        return protocol

    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)
        self.total += 1
        self.perAddress[p.address] = self.perAddress.get(p.address, 0) + 1

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        address = p.address
        self.total -= 1
        left = self.perAddress.get(address, 1) - 1
        if left:
            self.perAddress[address] = left
        else:
            self.perAddress.pop(address, None)
