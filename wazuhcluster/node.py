"""
Building a node: the one place where the parts of a master or a worker meet.

L{loadNode} reads and checks everything a node needs (configuration,
internal options, TLS material) before anything starts, so a bad setting
stops the daemon with one clear line and no port opened.  L{makeNodeService}
wires the parts into a service tree; tests pass their own reactor or clock.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import HostnameEndpoint, SSL4ServerEndpoint, wrapClientTLS
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from . import __version__
from .agents.registration import ForwardedRegistration, MasterRegistration
from .api.endpoints import ApiContext, routes
from .api.envelope import ApiError
from .api.localnode import LocalNode
from .api.nodecalls import NodeCalls
from .api.server import apiService
from .api.settings import ApiSettings, loadApiSettings
from .agents.registry import AgentRegistry
from .config import ClusterConfig, ConfigError, load_cluster_config
from .control.server import controlSocketService
from .master.fleet import Fleet, FleetView
from .home import WazuhHome
from .internal_options import InternalOptions, load_internal_options
from .worker.masterlink import MasterLink
from .protocol.link import LinkSettings
from .master.connection import WorkerConnectionFactory
from .stats import NodeStats
from .master.agentinfo import MasterAgentInfo
from .master.integrity import MasterIntegrity
from .sync.table import SyncTable
from .worker.agentinfo import WorkerAgentInfo
from .worker.integrity import WorkerIntegrity
from .tls import clientOptions, loadTLSMaterial, serverOptions


@frozen
class NodeSetup:
    """Everything checked and loaded that a node needs to start."""

    configPath: str
    home: WazuhHome
    config: ClusterConfig
    options: InternalOptions
    warnings: tuple[str, ...]
    api: ApiSettings


def loadNode(configPath: str, home: str | None = None) -> NodeSetup:
    """
    Read the configuration of a node; raise L{ConfigError} naming the problem.
    """
    wazuhHome = WazuhHome.forConfig(configPath, home)
    config, warnings = load_cluster_config(configPath)
    options = load_internal_options(wazuhHome.internalOptions)
    api = loadApiSettings(wazuhHome, config.is_master)
    return NodeSetup(configPath, wazuhHome, config, options, tuple(warnings), api)


class NodeStartError(Exception):
    """
    The node could not start (a port or socket it needs is taken).  twistd
    reports an exception to the terminal it was started from when it has
    daemonized, where a bare exit would leave its parent process waiting.
    """


class NodeService(MultiService):
    """The service tree of one node; says clearly why it cannot listen."""

    log = Logger()

    def __init__(self, setup: NodeSetup, foreground: bool = True) -> None:
        super().__init__()
        self.setup = setup
        self.foreground = foreground
        kind = "Master" if setup.config.is_master else f"Worker {setup.config.node_name}"
        self.logTag = f"[{kind}] [Main]"

    def privilegedStartService(self) -> None:
        # Runs after twistd has started logging (and daemonized): the reason
        # goes to cluster.log, and to stdout in the foreground.
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            if isinstance(e.port, str):
                message = f"cannot open the control socket {e.port}: {reason} (is another node running with this home?)"
            else:
                message = f"cannot listen on {e.interface or '0.0.0.0'}:{e.port}: {reason}"
            self.log.critical("{message}", message=message)
            if self.foreground:
                raise SystemExit(1) from None
            raise NodeStartError(message) from None

    def startService(self) -> None:
        for warning in self.setup.warnings:
            self.log.warn("{problem}", problem=warning)
        config = self.setup.config
        self.log.info(
            "Starting {type} node {name} of cluster {cluster} (version {version}, home {home}).",
            type=config.node_type,
            name=config.node_name,
            cluster=config.name,
            version=__version__,
            home=self.setup.home.root,
        )
        super().startService()

    def stopService(self) -> Any:
        config = self.setup.config
        self.log.info("Stopping {type} node {name}.", type=config.node_type, name=config.node_name)
        return super().stopService()


def makeNodeService(setup: NodeSetup, reactor: object, foreground: bool = True) -> NodeService:
    """The service tree of a master or a worker, ready to start."""
    config, home = setup.config, setup.home
    home.makeFolders()
    tls = loadTLSMaterial(home, config, setup.configPath)
    settings = LinkSettings.fromConfig(config, setup.options, tls, __version__)
    node = NodeService(setup, foreground)
    table = SyncTable.load()
    stats = NodeStats(reactor.seconds())
    local = LocalNode(
        home, config.node_name, config.name, config.node_type, __version__, stats, setup.api.restartCommand
    )
    if config.is_master:
        fleet = Fleet(settings, reactor)
        fleet.stats = stats
        fleet.setServiceParent(node)
        registration = MasterRegistration(AgentRegistry(home))
        agentInfo = MasterAgentInfo(home, setup.options, reactor, config.node_name, fleet.isConnectedWorker)
        agentInfo.stats = stats
        agentInfo.setServiceParent(node)
        fleet.agents = agentInfo
        integrity = MasterIntegrity(home, table, setup.options, reactor, lambda: fleet.workers)
        integrity.onClientKeysChanged = agentInfo.registryChanged
        integrity.stats = stats
        integrity.setServiceParent(node)
        fleet.integrityStatus = integrity.statusOf

        def toWorker(name: str) -> object:
            connection = fleet.workers.get(name)
            if connection is None:
                raise ApiError(3022, name)
            return connection

        calls = NodeCalls(local, reactor, toWorker, isMaster=True)
        factory = WorkerConnectionFactory(
            fleet, settings, reactor,
            lambda connection: {
                **integrity.sinksFor(connection), **agentInfo.sinksFor(connection), **calls.sinksFor(connection)
            },
            registration,
        )
        factory.nodeCalls = calls
        listening = StreamServerEndpointService(
            # A deep backlog: after a master restart every worker reconnects
            # within a second, and the default of 50 made a quarter of 100
            # workers wait for the kernel's one-second SYN retry
            # (bench/connect.py: 1.1 s to join 100 workers, 0.2 s with this).
            SSL4ServerEndpoint(
                reactor, config.port, serverOptions(tls), backlog=1024, interface=config.bind_addr
            ),
            factory,
        )
        listening._raiseSynchronously = True
        listening.setServiceParent(node)
        view = FleetView(fleet)
    else:
        endpoint = wrapClientTLS(
            clientOptions(tls), HostnameEndpoint(reactor, config.master_address, config.port)
        )
        integrity = WorkerIntegrity(home, table, setup.options, reactor, config.node_name)
        integrity.stats = stats

        def toMaster(name: str) -> object:
            if link.connection is None:
                raise ApiError(3023)
            return link.connection

        calls = NodeCalls(local, reactor, toMaster, isMaster=False)
        link = MasterLink(
            settings, endpoint, reactor,
            sinksFor=lambda connection: {**integrity.sinksFor(connection), **calls.sinksFor(connection)},
            onIntegrityChanged=integrity.syncSoon,
            nodeCalls=calls,
        )
        link.stats = stats
        integrity.connectionToMaster = lambda: link.connection
        agentInfo = WorkerAgentInfo(home, setup.options, reactor, config.node_name)
        agentInfo.stats = stats
        agentInfo.connectionToMaster = lambda: link.connection
        # A worker that joins takes the master's files at once, not a cycle later.
        link.onJoined.append(integrity.syncSoon)
        link.setServiceParent(node)
        integrity.setServiceParent(node)
        agentInfo.setServiceParent(node)
        registration = ForwardedRegistration(lambda: link.connection)
        view = link
    controlSocketService(reactor, home.controlSocket, view, registration).setServiceParent(node)
    if setup.api.enabled:
        apiService(
            reactor, setup.api, home, tls, routes(ApiContext(config, view, registration, calls))
        ).setServiceParent(node)
    return node


__all__ = ["ConfigError", "NodeSetup", "NodeService", "loadNode", "makeNodeService"]
