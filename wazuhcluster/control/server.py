"""
The node's local control socket, C{HOME/queue/cluster/c-internal.sock}.

C{cluster_control} (and later the API) ask the node here, over AMP on a UNIX
socket of mode 0660; neither reads the daemon's internals.  A worker answers
what only the master knows by asking the master over the cluster link.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from ..agents.registration import Registration, RegistrationResponders
from ..protocol.agentcommands import ListAgents
from ..protocol.nodeinfo import (
    GetHealth,
    ListNodes,
    NodeHealth,
    NodeInfo,
    pageOf,
)

#: Mode of the control socket: the daemon's user and group only.
SOCKET_MODE = 0o660


class ClusterView(Protocol):
    """Where a node gets the answers about the cluster."""

    async def nodes(self) -> list[NodeInfo]: ...

    async def health(self) -> tuple[str, list[NodeHealth]]: ...

    async def agentsPage(
        self, offset: int, limit: int, statuses: Sequence[str], nodes: Sequence[str], details: bool = False,
        listing: str = "",
    ) -> dict[str, Any]: ...


class ControlProtocol(RegistrationResponders, amp.AMP):
    """
    Answers C{cluster_control}'s questions from a L{ClusterView}, and
    C{manage_agents}' registrations through the node's L{Registration}.
    """

    def __init__(self, view: ClusterView, registration: Registration | None = None) -> None:
        super().__init__()
        self.view = view
        self.registration = registration

    @ListNodes.responder
    def listNodes(self, offset: int, limit: int) -> Deferred[dict[str, Any]]:
        async def answer() -> dict[str, Any]:
            return pageOf(ListNodes, await self.view.nodes(), offset, limit)

        return Deferred.fromCoroutine(answer())

    @GetHealth.responder
    def getHealth(self, offset: int, limit: int) -> Deferred[dict[str, Any]]:
        async def answer() -> dict[str, Any]:
            name, nodes = await self.view.health()
            return {"cluster_name": name, **pageOf(GetHealth, nodes, offset, limit)}

        return Deferred.fromCoroutine(answer())

    @ListAgents.responder
    def listAgents(
        self, offset: int, limit: int, statuses: list[str], nodes: list[str], details: bool = False,
        listing: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(
            self.view.agentsPage(offset, limit, statuses, nodes, bool(details), listing or "")
        )


def controlSocketService(
    reactor: object, path: str, view: ClusterView, registration: Registration | None = None
) -> StreamServerEndpointService:
    """
    The service listening on the control socket.  A lock file beside it
    keeps a second daemon with the same home from taking it over, and lets
    a restarted one replace the socket a killed one left behind.
    """
    endpoint = UNIXServerEndpoint(reactor, path, mode=SOCKET_MODE, wantPID=True)
    factory = Factory.forProtocol(lambda: ControlProtocol(view, registration))
    factory.noisy = False
    service = StreamServerEndpointService(endpoint, factory)
    service._raiseSynchronously = True
    return service
