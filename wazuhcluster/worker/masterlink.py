"""
A worker's permanent link to the master: connect, join, keep alive, reconnect.

C{ClientService} keeps the connection: it retries forever with a capped,
jittered backoff, and counts a connection only once the handshake (run as
its C{prepareConnection}) has succeeded, so a refused or half-done handshake
is just one more failed attempt.  While joined, a keep-alive goes to the
master every C{keep_alive} seconds; after C{max_failed_keepalive_attempts}
unanswered ones in a row the worker drops the connection and reconnects.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError  # what addTimeout raises
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import (
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol.agentcommands import ListAgents
from ..protocol.link import LinkSettings
from ..protocol.nodeinfo import AsksAboutNodes, NotConnectedToMaster
from ..protocol.stream import SinkFactory
from .connection import HandshakeFailed, MasterConnection, MasterConnectionFactory
from ..protocol.workercommands import KeepAlive
from ..stats import NodeStats


def connectFailureReason(failure: Failure) -> str:
    """
    Why a connection to the master could not be opened, in words: no
    Python reprs (Twisted names a cancelled attempt by its
    C{HostnameAddress(hostname=b'...')}) and no closing period, since the
    log line goes on.
    """
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(DNSLookupError):
        return "the name does not resolve (DNS lookup failed)"
    if failure.check(ConnectingCancelledError):
        return "no answer to the connection attempt"
    return failure.getErrorMessage().strip().rstrip(".")


def retryPolicy(connectionRetry: float, jitter: Callable[[], float] = random.random) -> Callable[[int], float]:
    """
    Wait between attempts: from a fraction of a second up to
    C{connection_retry} seconds, growing by half each time, plus up to a
    tenth more at random so that workers restarted together do not all
    knock at the same instant.
    """
    return backoffPolicy(
        initialDelay=min(0.5, connectionRetry),
        maxDelay=connectionRetry,
        factor=1.5,
        jitter=lambda: jitter() * connectionRetry / 10,
    )


@implementer(IHandshakeListener)
class _JoinGate(Protocol):
    """
    Sits between the TLS transport and C{ClientService}'s protocol proxy and
    lets the proxy hear of a lost connection only if that connection joined.

    Why: C{ClientService} (Twisted 26.10) has no transition for a connection
    lost while it is connecting or waiting, which is exactly what happens to
    a connection whose C{prepareConnection} (our handshake) failed: it logs
    C{NoTransition} with a traceback on every refused attempt.  For those
    connections the gate tells our protocol alone.
    """

    def __init__(self, proxy: IProtocol, connection: MasterConnection) -> None:
        self.proxy = proxy
        self.connection = connection

    def makeConnection(self, transport: object) -> None:
        self.transport = transport
        self.proxy.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.proxy.dataReceived(data)

    def handshakeCompleted(self) -> None:
        self.connection.handshakeCompleted()

    def connectionLost(self, reason: Failure) -> None:
        if self.connection.joined:
            self.proxy.connectionLost(reason)
        else:
            self.connection.connectionLost(reason)


@implementer(IProtocolFactory)
class _JoinGateFactory:
    def __init__(self, wrapped: IProtocolFactory, ours: MasterConnectionFactory) -> None:
        self.wrapped = wrapped
        self.ours = ours

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: object) -> IProtocol | None:
        proxy = self.wrapped.buildProtocol(addr)
        if proxy is None:
            return None
        return _JoinGate(proxy, self.ours.lastBuilt)


@implementer(IStreamClientEndpoint)
class _JoinGateEndpoint:
    """
    Also says why a connection attempt failed (refused, unreachable, no
    such host): the most common mistake of a new deployment must not be
    silent.  The same reason again is logged at debug level only, until the
    worker connects or the reason changes.
    """

    log = Logger()

    def __init__(self, endpoint: IStreamClientEndpoint, ours: MasterConnectionFactory) -> None:
        self.endpoint = endpoint
        self.ours = ours
        self.lastFailure: str | None = None

    @property
    def logTag(self) -> str:
        return f"[Worker {self.ours.settings.nodeName}] [Main]"

    def __repr__(self) -> str:
        # ClientService names its endpoint in its own (debug) lines.
        settings = self.ours.settings
        return f"master {settings.masterAddress}:{settings.masterPort}"

    def connect(self, factory: IProtocolFactory) -> Deferred:
        connecting = self.endpoint.connect(_JoinGateFactory(factory, self.ours))

        def connected(gate: _JoinGate) -> IProtocol:
            self.lastFailure = None
            return gate.proxy

        def failed(failure: Failure) -> Failure:
            why = connectFailureReason(failure)
            settings = self.ours.settings
            level = self.log.debug if why == self.lastFailure else self.log.error
            level(
                "Could not connect to master {address}:{port}: {why}. Retrying.",
                address=settings.masterAddress, port=settings.masterPort, why=why,
            )
            self.lastFailure = why
            return failure

        return connecting.addCallbacks(connected, failed)


class MasterLink(MultiService, AsksAboutNodes):
    """The worker's connection to the master, and what it asks the master."""

    log = Logger()

    def __init__(
        self,
        settings: LinkSettings,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        jitter: Callable[[], float] = random.random,
        sinksFor: "Callable[[MasterConnection], dict[str, tuple[SinkFactory, int]]] | None" = None,
        onIntegrityChanged: Callable[[], None] | None = None,
        nodeCalls: Any = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.clock = clock
        self.connection: MasterConnection | None = None
        self.failedKeepAlives = 0
        self._hasJoined = False
        #: Called each time the worker joins the master (its first syncs start there).
        self.onJoined: list[Callable[[], object]] = []
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        factory = MasterConnectionFactory(settings, clock, sinksFor, onIntegrityChanged)
        factory.nodeCalls = nodeCalls
        self._service = ClientService(
            _JoinGateEndpoint(endpoint, factory),
            factory,
            retryPolicy=retryPolicy(settings.options.connection_retry, jitter),
            clock=clock,
            prepareConnection=self._join,
        )
        self._service.setServiceParent(self)
        self._keepAlive = LoopingCall(self.sendKeepAlive)
        self._keepAlive.clock = clock

    @property
    def logTag(self) -> str:
        return f"[Worker {self.settings.nodeName}] [Main]"

    def _join(self, protocol: MasterConnection) -> Deferred[None]:
        # Without a limit, a peer that accepts the connection and never
        # answers (a frozen master, a proxy without backend) would hold the
        # worker forever instead of letting it retry.
        joining = Deferred.fromCoroutine(protocol.join())
        joining.addTimeout(self.settings.options.handshake_timeout, self.clock)
        return joining.addCallbacks(
            lambda _: self._joined(protocol), self._joinFailed, errbackArgs=(protocol,)
        )

    def _joined(self, protocol: MasterConnection) -> None:
        if self._hasJoined:
            self.stats.metrics.reconnects.inc()
        self._hasJoined = True
        self.connection = protocol
        self.failedKeepAlives = 0
        self.log.info(
            "Successfully connected to master {name} ({peer}).",
            name=protocol.masterName,
            peer=protocol.peerDescription(),
        )
        protocol.whenLost().addCallback(self._lost, protocol)
        self._keepAlive.start(self.settings.options.keep_alive, now=False).addErrback(
            lambda f: self.log.failure("Keep-alive cycle stopped", f)
        )
        for joined in self.onJoined:
            joined()

    def _joinFailed(self, failure: Failure, protocol: MasterConnection) -> Failure:
        if failure.check(HandshakeFailed):
            why = failure.getErrorMessage()
        elif failure.check(TimeoutError):
            why = (
                "the master did not complete the handshake within"
                f" {self.settings.options.handshake_timeout} seconds"
            )
        else:
            why = f"connection lost during the handshake ({failure.getErrorMessage().strip().rstrip('.')})"
        self.log.error("Could not connect to master: {why}. Retrying.", why=why)
        if protocol.transport is not None:
            protocol.transport.abortConnection()
        return failure

    def _lost(self, _: object, protocol: MasterConnection) -> None:
        if self.connection is protocol:
            self.connection = None
            if self._keepAlive.running:
                self._keepAlive.stop()
            if self.running:
                self.log.error("Lost connection to master. Reconnecting.")

    def sendKeepAlive(self) -> Deferred[None] | None:
        """
        One keep-alive; it must be answered before the next is due.  Never
        raises, so the cycle never dies.
        """
        connection = self.connection
        if connection is None:
            return None
        d = connection.callRemote(KeepAlive)
        d.addTimeout(self.settings.options.keep_alive, self.clock)
        sent = self.clock.seconds()

        def answered(_: object) -> None:
            self.failedKeepAlives = 0
            self.stats.count("keepalives_sent")
            self.log.debug(
                "Keep-alive answered by the master in {ms:.0f} ms.", ms=(self.clock.seconds() - sent) * 1000
            )

        def failed(failure: Failure) -> None:
            if self.connection is not connection:
                return  # the connection is gone: that is logged, not a keep-alive failure
            self.failedKeepAlives += 1
            limit = self.settings.options.max_failed_keepalive_attempts
            if failure.check(TimeoutError):
                why = f"no answer within {self.settings.options.keep_alive} seconds"
            else:
                why = failure.getErrorMessage().strip().rstrip(".")
            self.log.warn(
                "Keep-alive {n} of {limit} not answered by the master ({why}).",
                n=self.failedKeepAlives,
                limit=limit,
                why=why,
            )
            if self.failedKeepAlives >= limit and connection.transport is not None:
                self.log.error("The master stopped answering keep-alives; disconnecting.")
                connection.transport.abortConnection()

        return d.addCallbacks(answered, failed)

    async def agentsPage(
        self, offset: int, limit: int, statuses: Sequence[str], nodes: Sequence[str], details: bool = False,
        listing: str = "",
    ) -> dict[str, Any]:
        """A page of the agents, as the master lists them."""
        return await self.answeringPeer().callRemote(
            ListAgents, offset=offset, limit=limit, statuses=list(statuses), nodes=list(nodes),
            details=details, listing=listing,
        )

    def answeringPeer(self) -> MasterConnection:
        if self.connection is None:
            raise NotConnectedToMaster("this worker is not connected to the master")
        return self.connection
