"""
The client end of a node's control socket, as C{cluster_control} uses it.
"""

from __future__ import annotations

from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.protocols import amp

from ..protocol.nodeinfo import AsksAboutNodes


class ControlClient(AsksAboutNodes):
    """Asks one node, over its control socket, what it knows of the cluster."""

    def __init__(self, protocol: amp.AMP) -> None:
        self.protocol = protocol

    @classmethod
    async def connect(cls, reactor: object, path: str) -> "ControlClient":
        """Connect to the socket at C{path}; raises the endpoint's connection error."""
        protocol = await connectProtocol(UNIXClientEndpoint(reactor, path, timeout=10), amp.AMP())
        return cls(protocol)

    def answeringPeer(self) -> amp.AMP:
        return self.protocol

    def close(self) -> None:
        self.protocol.transport.loseConnection()
