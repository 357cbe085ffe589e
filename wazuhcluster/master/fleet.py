"""
The master's set of connected workers: who may join, who is alive, who is there.

Admission rules live here, in one place: the cluster name, the node type,
the version, the master's own name, the operator's allow-list of workers
(names, and certificate fingerprints), the most workers at once, and
duplicate names.  A duplicate is
not simply refused: the old connection is asked whether it is still alive,
and if it does not answer (the worker lost its network and came back on a
new connection) the new connection wins at once, instead of being locked
out until the master restarts (Wazuh issue #1355).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..protocol.link import LinkSettings, majorMinor
from ..protocol.nodeinfo import NodeHealth, NodeInfo
from ..protocol.workercommands import HelloRefused
from ..stats import NodeStats
from ..sync.status import IntegrityStatus

if TYPE_CHECKING:
    from .agentinfo import MasterAgentInfo

class WorkerConnection(Protocol):
    """
    A worker's connection as the fleet sees it (the master's
    L{wazuhcluster.master.connection.WorkerConnection}).
    """

    nodeName: str | None
    version: str
    connectedSince: float
    lastKeepAlive: float
    lost: bool
    transport: Any

    @property
    def address(self) -> str: ...

    @property
    def certificateFingerprint(self) -> str: ...

    def ping(self, timeout: float) -> Any: ...


_NODE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")


class Fleet(Service):
    """The workers connected to this master, and the keep-alive watch over them."""

    log = Logger()
    logTag = "[Master] [Keep alive]"

    def __init__(self, settings: LinkSettings, clock: IReactorTime) -> None:
        self.settings = settings
        self.clock = clock
        self.startedAt = clock.seconds()
        self._workers: dict[str, WorkerConnection] = {}
        self._joining: set[str] = set()
        #: The integrity status of a worker by name, when the master syncs files.
        self.integrityStatus: Callable[[str], IntegrityStatus] | None = None
        #: What the master knows of the agents, when it keeps agent info.
        self.agents: "MasterAgentInfo | None" = None
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        self._checker = LoopingCall(self.dropSilentWorkers)
        self._checker.clock = clock

    def startService(self) -> None:
        super().startService()
        self.startedAt = self.clock.seconds()
        self._checker.start(self.settings.options.check_worker_lastkeepalive, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._checker.running:
            self._checker.stop()

    @property
    def workers(self) -> dict[str, WorkerConnection]:
        """The joined workers by name (read only, please)."""
        return self._workers

    async def admit(
        self,
        connection: WorkerConnection,
        clusterName: str,
        nodeName: str,
        nodeType: str,
        version: str,
    ) -> None:
        """
        Let C{connection} join as C{nodeName}, or raise L{HelloRefused}
        with the reason both sides will log.
        """
        mine = self.settings
        if clusterName != mine.clusterName:
            raise HelloRefused(
                f"it belongs to cluster '{clusterName}' and this master to '{mine.clusterName}'"
            )
        if nodeType != "worker":
            raise HelloRefused(f"it is a '{nodeType}' node; only workers connect to the master")
        if not _NODE_NAME.match(nodeName):
            raise HelloRefused(f"its node name {nodeName!r} is not a valid node name")
        if nodeName == mine.nodeName:
            raise HelloRefused(f"its node name '{nodeName}' is the master's own name")
        if majorMinor(version) != majorMinor(mine.version):
            raise HelloRefused(
                f"its version {version} differs from the master's {mine.version}"
                " (major.minor must match)"
            )
        self._checkAllowed(connection, nodeName)
        if nodeName in self._joining:
            raise HelloRefused(f"another connection named '{nodeName}' is joining right now")
        existing = self._workers.get(nodeName)
        if existing is not None:
            self._joining.add(nodeName)
            try:
                alive = await existing.ping(self.settings.options.handshake_timeout / 2)
            finally:
                self._joining.discard(nodeName)
            if alive and not existing.lost:
                raise HelloRefused(
                    f"a node named '{nodeName}' is already connected from {existing.address}"
                )
            self.log.warn(
                "Worker {name}: its connection from {old} no longer answers;"
                " the new connection from {new} replaces it.",
                name=nodeName,
                old=existing.address,
                new=connection.address,
            )
            self._remove(existing)
            existing.transport.abortConnection()
        if connection.lost:
            raise HelloRefused("its connection closed while it was joining")
        most = self.settings.options.max_workers
        if nodeName not in self._workers and len(self._workers) >= most:
            raise HelloRefused(
                f"the master already has {len(self._workers)} workers, the most"
                f" cluster.max_workers allows"
            )
        self._workers[nodeName] = connection

    def _checkAllowed(self, connection: WorkerConnection, nodeName: str) -> None:
        """Raise L{HelloRefused} unless C{cluster.allowed_workers} lets C{nodeName} in."""
        allowed = dict(self.settings.options.allowed_workers)
        if not allowed:
            return
        if nodeName not in allowed:
            raise HelloRefused(
                f"its node name '{nodeName}' is not in the master's cluster.allowed_workers"
            )
        pinned = allowed[nodeName]
        if pinned and connection.certificateFingerprint != pinned:
            raise HelloRefused(
                f"its certificate is not the one cluster.allowed_workers names for '{nodeName}'"
                f" (SHA-256 {connection.certificateFingerprint[:16] or 'none'}...)"
            )

    def _remove(self, connection: WorkerConnection) -> bool:
        if self._workers.get(connection.nodeName) is connection:
            del self._workers[connection.nodeName]
            return True
        return False

    def leave(self, connection: WorkerConnection) -> bool:
        """
        A joined worker's connection closed; whether it was still the
        worker's current connection (not already dropped or replaced).
        """
        return self._remove(connection)

    def dropSilentWorkers(self) -> None:
        """Drop the workers silent for longer than C{max_allowed_time_without_keepalive}."""
        limit = self.settings.options.max_allowed_time_without_keepalive
        now = self.clock.seconds()
        for connection in list(self._workers.values()):
            silence = now - connection.lastKeepAlive
            if silence > limit:
                self.log.warn(
                    "No keep-alive from worker {name} for {silence:.0f} seconds"
                    " (limit {limit}); disconnecting it.",
                    name=connection.nodeName,
                    silence=silence,
                    limit=limit,
                )
                self._remove(connection)
                connection.transport.abortConnection()

    def nodes(self) -> list[NodeInfo]:
        """The master, then the workers by name."""
        mine = self.settings
        return [NodeInfo(mine.nodeName, mine.masterAddress, "master", mine.version)] + [
            NodeInfo(name, c.address, "worker", c.version)
            for name, c in sorted(self._workers.items())
        ]

    async def health(self) -> list[NodeHealth]:
        """The master, then each worker with its connection times, syncs and active agents."""
        mine = self.settings
        active = await self.agents.activeAgents() if self.agents is not None else {}
        return [
            NodeHealth(
                mine.nodeName, mine.masterAddress, "master", mine.version, self.startedAt, 0.0,
                active_agents=active.get(mine.nodeName, 0),
            )
        ] + [
            self._workerHealth(name, c, active.get(name, 0))
            for name, c in sorted(self._workers.items())
        ]

    def _workerHealth(self, name: str, connection: WorkerConnection, activeAgents: int) -> NodeHealth:
        status = self.integrityStatus(name) if self.integrityStatus else IntegrityStatus()
        agentInfo = self.agents.statusOf(name) if self.agents is not None else None
        return NodeHealth(
            name, connection.address, "worker", connection.version,
            connection.connectedSince, connection.lastKeepAlive,
            sync_integrity_running=status.running,
            integrity_start=status.date_start,
            integrity_end=status.date_end,
            integrity_shared=status.shared,
            integrity_missing=status.missing,
            integrity_extra=status.extra,
            integrity_extra_valid=status.extra_valid,
            agentgroups_start=status.agentgroups_start,
            agentgroups_end=status.agentgroups_end,
            agentgroups_total=status.agentgroups_total,
            active_agents=activeAgents,
            sync_agentinfo_running=bool(agentInfo and agentInfo.running),
            agentinfo_start=agentInfo.date_start if agentInfo else 0.0,
            agentinfo_end=agentInfo.date_end if agentInfo else 0.0,
            agentinfo_total=agentInfo.total if agentInfo else 0,
        )

    def isConnectedWorker(self, connection: Any) -> bool:
        """Whether C{connection} is the current connection of a joined worker."""
        name = getattr(connection, "nodeName", None)
        return name is not None and self._workers.get(name) is connection

    async def agentsPage(
        self, offset: int, limit: int, statuses: Sequence[str], nodes: Sequence[str], details: bool = False,
        listing: str = "",
    ) -> dict[str, Any]:
        """A page of the agents (L{ListAgents})."""
        if self.agents is None:
            return {"agents": [], "total": 0, "listing": ""}
        return await self.agents.agentsPage(offset, limit, statuses, nodes, details, listing)


class FleetView:
    """What the master's control socket shows: the fleet, answered locally."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def nodes(self) -> list[NodeInfo]:
        return self.fleet.nodes()

    async def health(self) -> tuple[str, list[NodeHealth]]:
        return self.fleet.settings.clusterName, await self.fleet.health()

    async def agentsPage(
        self, offset: int, limit: int, statuses: Sequence[str], nodes: Sequence[str], details: bool = False,
        listing: str = "",
    ) -> dict[str, Any]:
        return await self.fleet.agentsPage(offset, limit, statuses, nodes, details, listing)
