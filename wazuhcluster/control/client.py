"""
The client end of a node's control socket, as C{cluster_control} uses it.
"""

from __future__ import annotations

from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.protocols import amp

from typing import Sequence

from ..agents.status import AgentRecord
from ..protocol.agentcommands import ListAgents
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

    async def agents(self, statuses: Sequence[str] = (), nodes: Sequence[str] = ()) -> list[AgentRecord]:
        """The agents the master lists, page by page; only those matching the filters given."""
        items: list[dict] = []
        listing = ""
        while True:
            page = await self.protocol.callRemote(
                ListAgents, offset=len(items), limit=ListAgents.pageSize,
                statuses=list(statuses), nodes=list(nodes), listing=listing,
            )
            listing = page["listing"]
            items.extend(page["agents"])
            if not page["agents"] or len(items) >= page["total"]:
                break
        return [AgentRecord(**item) for item in items]

    def close(self) -> None:
        self.protocol.transport.loseConnection()
