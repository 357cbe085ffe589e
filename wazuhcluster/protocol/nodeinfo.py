"""
What the cluster tells about its nodes, on the wire and to operators.

The same typed AMP lists serve the cluster link (a worker asking the master)
and the local control socket (cluster_control asking its node), so a node
list has one shape everywhere.  Lists travel in pages so that no message
outgrows one AMP value, however many workers there are.
"""

from __future__ import annotations

from attrs import asdict, frozen
from twisted.protocols import amp

#: Nodes per page of L{ListNodes}: each entry is bounded (names of 64
#: characters at most), so a page stays far below one AMP value.
PAGE_SIZE = 100

#: Nodes per page of L{GetHealth}, whose entries are four times larger.
HEALTH_PAGE_SIZE = 25


@frozen
class NodeInfo:
    """One node as C{cluster_control -l} lists it."""

    name: str
    address: str
    type: str
    version: str


@frozen
class NodeHealth:
    """
    One connected node as C{cluster_control -i} describes it.  Times are
    seconds since the epoch on the master's clock, 0 for never.
    """

    name: str
    address: str
    type: str
    version: str
    connected_since: float
    last_keep_alive: float
    sync_integrity_running: bool = False
    integrity_start: float = 0.0
    integrity_end: float = 0.0
    integrity_shared: int = 0
    integrity_missing: int = 0
    integrity_extra: int = 0
    integrity_extra_valid: int = 0
    agentgroups_start: float = 0.0
    agentgroups_end: float = 0.0
    agentgroups_total: int = 0
    active_agents: int = 0
    sync_agentinfo_running: bool = False
    agentinfo_start: float = 0.0
    agentinfo_end: float = 0.0
    agentinfo_total: int = 0


def toBoxes(items: list) -> list[dict]:
    """Items as the dicts an AMP list carries."""
    return [asdict(item) for item in items]


NODE_LIST = amp.AmpList(
    [
        (b"name", amp.Unicode()),
        (b"address", amp.Unicode()),
        (b"type", amp.Unicode()),
        (b"version", amp.Unicode()),
    ]
)

HEALTH_LIST = amp.AmpList(
    [
        (b"name", amp.Unicode()),
        (b"address", amp.Unicode()),
        (b"type", amp.Unicode()),
        (b"version", amp.Unicode()),
        (b"connected_since", amp.Float()),
        (b"last_keep_alive", amp.Float()),
        (b"sync_integrity_running", amp.Boolean()),
        (b"integrity_start", amp.Float()),
        (b"integrity_end", amp.Float()),
        (b"integrity_shared", amp.Integer()),
        (b"integrity_missing", amp.Integer()),
        (b"integrity_extra", amp.Integer()),
        (b"integrity_extra_valid", amp.Integer()),
        (b"agentgroups_start", amp.Float()),
        (b"agentgroups_end", amp.Float()),
        (b"agentgroups_total", amp.Integer()),
        (b"active_agents", amp.Integer()),
        (b"sync_agentinfo_running", amp.Boolean()),
        (b"agentinfo_start", amp.Float()),
        (b"agentinfo_end", amp.Float()),
        (b"agentinfo_total", amp.Integer()),
    ]
)


class NotConnectedToMaster(Exception):
    """A worker was asked something only the master knows while disconnected."""


class ListNodes(amp.Command):
    """A page of the nodes of the cluster, master first."""

    pageSize = PAGE_SIZE

    arguments = [(b"offset", amp.Integer()), (b"limit", amp.Integer())]
    response = [(b"nodes", NODE_LIST), (b"total", amp.Integer())]
    errors = {NotConnectedToMaster: b"NOT_CONNECTED_TO_MASTER"}


class GetHealth(amp.Command):
    """The cluster name and a page of the connected nodes' health, master first."""

    pageSize = HEALTH_PAGE_SIZE

    arguments = [(b"offset", amp.Integer()), (b"limit", amp.Integer())]
    response = [
        (b"cluster_name", amp.Unicode()),
        (b"nodes", HEALTH_LIST),
        (b"total", amp.Integer()),
    ]
    errors = {NotConnectedToMaster: b"NOT_CONNECTED_TO_MASTER"}


def pageOf(command: type[amp.Command], items: list, offset: int, limit: int) -> dict:
    """
    The answer to a page request of C{command} over C{items}: the page
    (its limit capped at the command's page size) and the total.
    """
    start = max(offset, 0)
    page = items[start : start + min(max(limit, 0), command.pageSize)]
    return {"nodes": toBoxes(page), "total": len(items)}


class AsksAboutNodes:
    """
    C{nodes()} and C{health()} asked, page by page, of a peer that answers
    L{ListNodes} and L{GetHealth}: the master (for a worker), or a node's
    control socket (for C{cluster_control}).
    """

    def answeringPeer(self) -> amp.AMP:
        """The connection to ask; raises if there is none."""
        raise NotImplementedError

    async def _allPages(self, command: type[amp.Command]) -> tuple[dict, list[dict]]:
        peer = self.answeringPeer()
        first = await peer.callRemote(command, offset=0, limit=command.pageSize)
        items = list(first["nodes"])
        while len(items) < first["total"]:
            page = await peer.callRemote(command, offset=len(items), limit=command.pageSize)
            if not page["nodes"]:
                break
            items.extend(page["nodes"])
        return first, items

    async def nodes(self) -> list[NodeInfo]:
        """The nodes of the cluster, master first."""
        _, items = await self._allPages(ListNodes)
        return [NodeInfo(**item) for item in items]

    async def health(self) -> tuple[str, list[NodeHealth]]:
        """The cluster name and the connected nodes' health, master first."""
        first, items = await self._allPages(GetHealth)
        return first["cluster_name"], [NodeHealth(**item) for item in items]
