"""
The worker's end of its connection to the master, and the handshake it runs.

The handshake, once TLS is up:

 1. C{Authenticate}: the worker sends a nonce, the master answers with its own.
 2. C{ProveKey}: the worker proves it holds the cluster key by an HMAC over
    both nonces and the TLS channel binding; the master checks it and proves
    the same back.  A man in the middle without the key cannot make either
    proof, and cannot relay them, since its two TLS sessions differ.
 3. Both sides derive this connection's sealing keys; every box from now on
    is sealed.  C{Hello} says who the worker is; the master takes it or
    says why not.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..logs import LogThrottle
from ..api.nodecalls import NodeCallResponders
from ..tls import PeerIdentityError, channelBinding, checkPeerIdentity, peerCertificate
from ..protocol.link import LinkSettings
from ..protocol.mastercommands import IntegrityChanged, Ping
from ..protocol.sealed import SealedAMP
from ..protocol.stream import SinkFactory, StreamEndpoint, StreamResponders
from ..protocol.sealing import keyProof, proofMatches, sealersFor
from ..protocol.workercommands import NONCE_SIZE, Authenticate, Hello, HelloRefused, KeyRefused, ProveKey


class HandshakeFailed(Exception):
    """The worker could not join the master; the message says why, for the log."""


@implementer(IHandshakeListener)
class MasterConnection(NodeCallResponders, StreamResponders, SealedAMP):
    """The worker's end of its connection to the master."""

    log = Logger()

    def __init__(
        self,
        settings: LinkSettings,
        clock: IReactorTime,
        sinksFor: "Callable[[MasterConnection], dict[str, tuple[SinkFactory, int]]] | None" = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.streams = StreamEndpoint(
            self, clock, sinksFor(self) if sinksFor else {}, settings.options.timeout_receiving_file
        )
        self.masterName: str | None = None
        self._tlsUp: Deferred[None] = Deferred()
        self._lost: Deferred[None] = Deferred()

    @property
    def logTag(self) -> str:
        return f"[Worker {self.settings.nodeName}] [Main]"

    @property
    def joined(self) -> bool:
        """Whether the handshake has succeeded on this connection."""
        return self.masterName is not None

    def peerName(self) -> str:
        return f"master {self.masterName or ''} ({self.peerDescription()})".replace("  ", " ")

    def handshakeCompleted(self) -> None:
        if not self._tlsUp.called:  # the join may have timed out already
            self._tlsUp.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self.streams.connectionLost()
        if not self._tlsUp.called:
            self._tlsUp.errback(reason)
        self._lost.callback(None)
        super().connectionLost(reason)

    def whenLost(self) -> Deferred[None]:
        """Fires when this connection has closed."""
        d: Deferred[None] = Deferred()
        self._lost.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    async def join(self) -> None:
        """
        Run the handshake; raise L{HandshakeFailed} saying why it failed.
        """
        settings = self.settings
        await self._tlsUp
        master = peerCertificate(self.transport)
        if settings.tls.verifiesPeers:
            try:
                checkPeerIdentity(master, settings.masterAddress)
            except PeerIdentityError as e:
                raise HandshakeFailed(str(e)) from None
        workerNonce = os.urandom(NONCE_SIZE)
        answer = await self.callRemote(Authenticate, worker_nonce=workerNonce)
        masterNonce = answer["master_nonce"]
        if len(masterNonce) != NONCE_SIZE:
            raise HandshakeFailed("the master sent a malformed handshake")
        binding = channelBinding(self.transport, master, settings.certificate)
        transcript = workerNonce + masterNonce + binding
        try:
            answer = await self.callRemote(
                ProveKey, proof=keyProof(settings.root, b"worker", transcript)
            )
        except KeyRefused as e:
            raise HandshakeFailed(f"the master refused the connection: {e}") from None
        if not proofMatches(keyProof(settings.root, b"master", transcript), answer["proof"]):
            raise HandshakeFailed(
                "the master could not prove it holds the cluster key: the keys differ,"
                " or something is in the middle of this connection"
            )
        self.startSealing(*sealersFor("worker", settings.root, workerNonce, masterNonce, binding))
        try:
            answer = await self.callRemote(
                Hello,
                cluster_name=settings.clusterName,
                node_name=settings.nodeName,
                node_type=settings.nodeType,
                version=settings.version,
            )
        except HelloRefused as e:
            raise HandshakeFailed(f"the master refused the connection: {e}") from None
        self.masterName = answer["master_name"]

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}

    @IntegrityChanged.responder
    def integrityChanged(self) -> dict[str, Any]:
        if self.joined and self.factory is not None and self.factory.onIntegrityChanged is not None:
            self.factory.onIntegrityChanged()
        return {}


class MasterConnectionFactory(Factory):
    """Makes the L{MasterConnection} of each attempt to reach the master."""

    noisy = False

    def __init__(
        self,
        settings: LinkSettings,
        clock: IReactorTime,
        sinksFor: "Callable[[MasterConnection], dict[str, tuple[SinkFactory, int]]] | None" = None,
        onIntegrityChanged: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.sinksFor = sinksFor
        self.onIntegrityChanged = onIntegrityChanged
        #: Answers the master's API calls for this node (set by the builder).
        self.nodeCalls: Any = None
        self.lastBuilt: MasterConnection | None = None
        self.logThrottle = LogThrottle(clock.seconds)

    def buildProtocol(self, addr: object) -> MasterConnection:
        protocol = MasterConnection(self.settings, self.clock, self.sinksFor)
        protocol.factory = self
        protocol.logThrottle = self.logThrottle
        self.lastBuilt = protocol
        return protocol
