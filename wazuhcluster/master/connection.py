"""
The master's end of a worker's connection: the handshake, then the worker's
requests.

A connection costs nothing until it proves the cluster key and says hello:
it holds no place in the fleet, and if it does not finish the handshake in
C{handshake_timeout} seconds (a load balancer's health check, a port scanner,
a half-open socket) it is closed; only a debug line records it when it never
said a word.

Strangers are also few: the factory counts the connections that have not
proved the key yet, in all and per source address, and closes a new one at
once when either count is at its cap (C{cluster.max_unauthenticated_*}).
What strangers make the master log is throttled to a line a minute per
address and kind of event (L{LogThrottle}).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol, ServerFactory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ..logs import LogThrottle
from ..tls import channelBinding, fingerprint, peerCertificate
from ..agents.registration import Registration, RegistrationResponders
from ..api.nodecalls import NodeCallResponders
from ..protocol.agentcommands import ListAgents, RegistryRefused
from ..protocol.link import LinkSettings
from ..protocol.mastercommands import Ping
from ..protocol.nodeinfo import GetHealth, ListNodes, pageOf
from ..protocol.sealed import SealedAMP
from ..protocol.stream import SinkFactory, StreamEndpoint, StreamResponders
from ..protocol.sealing import keyProof, proofMatches, sealersFor
from ..protocol.workercommands import (
    NONCE_SIZE,
    Authenticate,
    Hello,
    HelloRefused,
    KeepAlive,
    KeyRefused,
    ProveKey,
)

class Admission(Protocol):
    """
    What a worker's connection asks of the master's set of workers (the
    L{Fleet <wazuhcluster.master.fleet.Fleet>}): it is handed one, as a
    Twisted protocol is handed its factory, so neither module imports the
    other.
    """

    stats: Any

    async def admit(
        self, connection: "WorkerConnection", clusterName: str, nodeName: str, nodeType: str, version: str
    ) -> None: ...

    def leave(self, connection: "WorkerConnection") -> bool: ...

    def nodes(self) -> list[Any]: ...

    async def health(self) -> list[Any]: ...

    async def agentsPage(
        self, offset: int, limit: int, statuses: Sequence[str], nodes: Sequence[str], details: bool = False,
        listing: str = "",
    ) -> dict[str, Any]: ...


class WorkerConnection(NodeCallResponders, RegistrationResponders, StreamResponders, SealedAMP):
    """The master's end of one worker's connection."""

    log = Logger()
    unsealedCommands = frozenset({Authenticate.commandName, ProveKey.commandName})

    def __init__(
        self,
        fleet: Admission,
        settings: LinkSettings,
        clock: IReactorTime,
        sinksFor: "Callable[[WorkerConnection], dict[str, tuple[SinkFactory, int]]] | None" = None,
        registration: "Registration | None" = None,
    ) -> None:
        super().__init__()
        self.registration = registration
        self.fleet = fleet
        self.settings = settings
        self.clock = clock
        self.streams = StreamEndpoint(
            self, clock, sinksFor(self) if sinksFor else {}, settings.options.timeout_receiving_file
        )
        self.nodeName: str | None = None
        self.version = ""
        self.connectedSince = 0.0
        self.lastKeepAlive = 0.0
        self.lost = False
        self._workerNonce: bytes | None = None
        self._masterNonce: bytes | None = None
        self._spoke = False
        self._handshakeTimer: IDelayedCall | None = None
        #: Called once, when this connection stops counting as a stranger
        #: (the key proved, or the connection closed).
        self.onAuthenticated: Callable[[], None] | None = None

    @property
    def logTag(self) -> str:
        if self.nodeName is None:
            return "[Master] [Handshake]"
        return f"[Worker {self.nodeName}] [Main]"

    @property
    def address(self) -> str:
        """The worker's IP address as the master sees it."""
        return str(getattr(self.transport.getPeer(), "host", ""))

    @property
    def joined(self) -> bool:
        return self.nodeName is not None

    @property
    def certificateFingerprint(self) -> str:
        """SHA-256 of the worker's TLS certificate (lowercase hex; "" for none)."""
        try:
            return fingerprint(peerCertificate(self.transport)).hex()
        except Exception:
            return ""

    def peerName(self) -> str:
        if self.nodeName is None:
            return self.peerDescription()
        return f"{self.nodeName} ({self.peerDescription()})"

    def _noLongerStranger(self) -> None:
        release, self.onAuthenticated = self.onAuthenticated, None
        if release is not None:
            release()

    def _warnOnce(self, kind: str, format: str, **fields: object) -> None:
        """A WARNING about this peer, at most one a minute per address and C{kind}."""
        self.logThrottle.emit(self.log, LogLevel.warn, self.peerHost(), kind, format, **fields)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._handshakeTimer = self.clock.callLater(
            self.settings.options.handshake_timeout, self._handshakeExpired
        )

    def dataReceived(self, data: bytes) -> None:
        self._spoke = True
        super().dataReceived(data)

    def _handshakeExpired(self) -> None:
        self._handshakeTimer = None
        if self._spoke:
            self._warnOnce(
                "handshake-timeout",
                "Closing connection from {peer}: it did not complete the handshake"
                " in {timeout} seconds.",
                peer=self.peerDescription(),
                timeout=self.settings.options.handshake_timeout,
            )
        else:
            self.log.debug(
                "Closing silent connection from {peer} (a health check or a port scan).",
                peer=self.peerDescription(),
            )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.lost = True
        self._noLongerStranger()
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        self._handshakeTimer = None
        self.streams.connectionLost()
        if self.joined and self.fleet.leave(self):
            self.log.info("Worker {name} disconnected ({why}).", name=self.nodeName, why=reason.getErrorMessage())
        super().connectionLost(reason)

    def _registration(self) -> "Registration":
        if not self.joined:
            raise RegistryRefused("only a worker that has joined may forward registrations")
        return super()._registration()

    def _closeSoon(self) -> None:
        """Close after the answer being sent now has gone out."""
        self.clock.callLater(0, self.transport.loseConnection)

    @Authenticate.responder
    def authenticate(self, worker_nonce: bytes) -> dict[str, Any]:
        if self._workerNonce is not None or len(worker_nonce) != NONCE_SIZE:
            self.dropPeer("sent a malformed or repeated handshake")
            return Deferred()
        self._workerNonce = worker_nonce
        self._masterNonce = os.urandom(NONCE_SIZE)
        return {"master_nonce": self._masterNonce}

    @ProveKey.responder
    def proveKey(self, proof: bytes) -> dict[str, Any]:
        if self._masterNonce is None or self.sealed or self._pendingSealing is not None:
            self.dropPeer("sent its key proof out of order")
            return Deferred()
        binding = channelBinding(
            self.transport, self.settings.certificate, peerCertificate(self.transport)
        )
        transcript = self._workerNonce + self._masterNonce + binding
        if not proofMatches(keyProof(self.settings.root, b"worker", transcript), proof):
            self._warnOnce(
                "key-refused",
                "Refused connection from {peer}: it failed to prove it holds the cluster"
                " key (its <key> differs from the master's).",
                peer=self.peerDescription(),
            )
            self._closeSoon()
            raise KeyRefused("wrong cluster key: this node's <key> differs from the master's")
        self.startSealingAfterAnswer(
            *sealersFor("master", self.settings.root, self._workerNonce, self._masterNonce, binding)
        )
        self._noLongerStranger()
        return {"proof": keyProof(self.settings.root, b"master", transcript)}

    @Hello.responder
    def hello(self, cluster_name: str, node_name: str, node_type: str, version: str) -> Deferred:
        if self.joined:
            self.dropPeer("said hello twice")
            return Deferred()
        admitted = Deferred.fromCoroutine(
            self.fleet.admit(self, cluster_name, node_name, node_type, version)
        )

        def accepted(_: object) -> dict[str, str]:
            if self._handshakeTimer is not None and self._handshakeTimer.active():
                self._handshakeTimer.cancel()
            self._handshakeTimer = None
            self.nodeName, self.version = node_name, version
            self.connectedSince = self.lastKeepAlive = self.clock.seconds()
            self.log.info(
                "Worker {name} connected from {address} (version {version}).",
                name=node_name,
                address=self.address,
                version=version,
            )
            return {"master_name": self.settings.nodeName}

        def refused(failure: Failure) -> Failure:
            failure.trap(HelloRefused)
            self._warnOnce(
                f"hello-refused {node_name[:64]}",
                "Refused connection from {peer} (node {name}): {why}.",
                peer=self.peerDescription(),
                name=node_name,
                why=failure.getErrorMessage(),
            )
            self._closeSoon()
            return failure

        return admitted.addCallbacks(accepted, refused)

    @KeepAlive.responder
    def keepAlive(self) -> dict[str, Any]:
        if not self.joined:
            self.dropPeer("sent a keep-alive before saying hello")
            return Deferred()
        # No log line here: it is the hottest path of the master, and its
        # time is visible with cluster_control -i.
        self.lastKeepAlive = self.clock.seconds()
        self.fleet.stats.count("keepalives_received")
        return {}

    @ListNodes.responder
    def listNodes(self, offset: int, limit: int) -> dict[str, Any]:
        return pageOf(ListNodes, self.fleet.nodes(), offset, limit)

    @GetHealth.responder
    def getHealth(self, offset: int, limit: int) -> Deferred[dict[str, Any]]:
        async def answer() -> dict[str, Any]:
            health = await self.fleet.health()
            return {"cluster_name": self.settings.clusterName, **pageOf(GetHealth, health, offset, limit)}

        return Deferred.fromCoroutine(answer())

    @ListAgents.responder
    def listAgents(
        self, offset: int, limit: int, statuses: list[str], nodes: list[str], details: bool = False,
        listing: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        if not self.joined:
            raise RegistryRefused("only a worker that has joined may ask for the agents")
        return Deferred.fromCoroutine(
            self.fleet.agentsPage(offset, limit, statuses, nodes, bool(details), listing or "")
        )

    def ping(self, timeout: float) -> Deferred:
        """Fires with C{True} if the worker answers within C{timeout}, else C{False}."""
        d = self.callRemote(Ping)
        d.addTimeout(timeout, self.clock)
        return d.addCallbacks(lambda _: True, lambda _: False)


class WorkerConnectionFactory(ServerFactory):
    """Makes a L{WorkerConnection} for each TLS connection to the master."""

    noisy = False
    log = Logger()
    logTag = "[Master] [Handshake]"

    def __init__(
        self,
        fleet: Admission,
        settings: LinkSettings,
        clock: IReactorTime,
        sinksFor: "Callable[[WorkerConnection], dict[str, tuple[SinkFactory, int]]] | None" = None,
        registration: "Registration | None" = None,
    ) -> None:
        self.fleet = fleet
        self.settings = settings
        self.clock = clock
        self.sinksFor = sinksFor
        self.registration = registration
        #: Answers the workers' API calls (set by the builder).
        self.nodeCalls: Any = None
        self.logThrottle = LogThrottle(clock.seconds)
        #: Connections that have not proved the key yet, by source address.
        self.strangers: dict[str, int] = {}
        self.strangersTotal = 0

    def buildProtocol(self, addr: object) -> TwistedProtocol:
        host = str(getattr(addr, "host", addr))
        refusal = self._strangerRefusal(host)
        if refusal is not None:
            self.logThrottle.emit(
                self.log, LogLevel.warn, host, "stranger-cap",
                "Closing a new connection from {peer} at once: {why}.", peer=host, why=refusal,
            )
            return _Closed()
        self.strangers[host] = self.strangers.get(host, 0) + 1
        self.strangersTotal += 1
        protocol = WorkerConnection(self.fleet, self.settings, self.clock, self.sinksFor, self.registration)
        protocol.factory = self
        protocol.logThrottle = self.logThrottle
        protocol.onAuthenticated = lambda: self._strangerGone(host)
        return protocol

    def _strangerRefusal(self, host: str) -> str | None:
        """Why a new connection from C{host} is closed at once, or C{None}."""
        options = self.settings.options
        if self.strangers.get(host, 0) >= options.max_unauthenticated_per_address:
            return (
                f"{self.strangers[host]} connections from this address have not proved the cluster"
                f" key yet (cluster.max_unauthenticated_per_address)"
            )
        if self.strangersTotal >= options.max_unauthenticated_connections:
            return (
                f"{self.strangersTotal} connections have not proved the cluster key yet"
                f" (cluster.max_unauthenticated_connections)"
            )
        return None

    def _strangerGone(self, host: str) -> None:
        self.strangersTotal -= 1
        left = self.strangers.get(host, 0) - 1
        if left > 0:
            self.strangers[host] = left
        else:
            self.strangers.pop(host, None)


class _Closed(TwistedProtocol):
    """A connection over the caps on strangers: closed as soon as it opens."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()
