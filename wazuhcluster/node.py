"""
Building a node: the one place where the parts of a master or a worker meet.

L{loadNode} reads and checks everything a node needs (configuration,
internal options, TLS material) before anything starts, so a bad setting
stops the daemon with one clear line and no port opened.  L{makeNodeService}
wires the parts into a service tree; tests pass their own reactor or clock.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable

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
from .api.guard import raiseFileLimit
from .api.server import apiService
from .api.settings import ApiSettings, loadApiSettings
from .agents.registry import AgentRegistry
from .config import ClusterConfig, ConfigError, load_cluster_config, local_address_problem
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
from .metrics.endpoint import metricsService
from .metrics.reactorlag import ReactorLagProbe
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
    config, warnings = load_cluster_config(configPath, local_address_problem)
    options = load_internal_options(wazuhHome.internalOptions)
    api = loadApiSettings(wazuhHome, config.is_master)
    return NodeSetup(configPath, wazuhHome, config, options, tuple(warnings), api)


def _listenProblem(host: str, port: int) -> str | None:
    """Why C{host}:C{port} cannot be listened on right now, or L{None}."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As Twisted listens: connections in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return f"cannot listen on {host}:{port}: {e.strerror}"
    return None


def portProblem(setup: NodeSetup) -> str | None:
    """
    Why the node could not listen where it must (a master's cluster port,
    the API's port), checked before anything starts: in daemon mode this
    is the last moment the terminal that started the node can be told in
    plain words.  The metrics port is checked too.  A port taken in between
    is still reported at start.
    """
    config, api = setup.config, setup.api
    if config.is_master:
        problem = _listenProblem(config.bind_addr, config.port)
        if problem:
            return problem
    if api.enabled:
        problem = _listenProblem(api.host, api.port)
        if problem:
            return problem
    if setup.options.metrics_port:
        return _listenProblem(setup.options.metrics_bind, setup.options.metrics_port)
    return None


class NodeService(MultiService):
    """The service tree of one node; says clearly why it cannot listen."""

    log = Logger()

    def __init__(self, setup: NodeSetup, foreground: bool = True) -> None:
        super().__init__()
        self.setup = setup
        self.foreground = foreground
        kind = "Master" if setup.config.is_master else f"Worker {setup.config.node_name}"
        self.logTag = f"[{kind}] [Main]"
        #: Told why the node cannot start, when something waits for that
        #: (the terminal of a daemonizing twistd; see L{wazuhcluster.tap}).
        self.reportStartFailure: Callable[[str], None] | None = None
        #: Why the node stops, once it is asked to ("SIGTERM").
        self.stopReason: str | None = None

    def privilegedStartService(self) -> None:
        # Runs after twistd has started logging (and daemonized): the reason
        # goes to cluster.log, and to standard error in the foreground.
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            if isinstance(e.port, str):
                message = f"cannot open the control socket {e.port}: {reason} (is another node running with this home?)"
            else:
                message = f"cannot listen on {e.interface or '0.0.0.0'}:{e.port}: {reason}"
            self.log.critical("{problem}", problem=message)
            if self.reportStartFailure is not None:
                self.reportStartFailure(message)
            raise SystemExit(1) from None

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
        why = f" ({self.stopReason})" if self.stopReason else ""
        self.log.info("Stopping {type} node {name}{why}.", type=config.node_type, name=config.node_name, why=why)
        stopping = super().stopService()

        def stopped(result: object) -> object:
            self.log.info("{type} node {name} stopped.", type=config.node_type.capitalize(), name=config.node_name)
            return result

        if stopping is None:
            return stopped(None)
        return stopping.addBoth(stopped)


def makeNodeService(setup: NodeSetup, reactor: object, foreground: bool = True) -> NodeService:
    """The service tree of a master or a worker, ready to start."""
    config, home = setup.config, setup.home
    raiseFileLimit()  # API connections are capped at an eighth of it
    home.makeFolders()
    tls = loadTLSMaterial(home, config, setup.configPath)
    settings = LinkSettings.fromConfig(config, setup.options, tls, __version__)
    node = NodeService(setup, foreground)
    table = SyncTable.load()
    stats = NodeStats(reactor.seconds())
    metrics = stats.metrics
    metrics.describeNode(
        config.node_name, config.name, config.node_type, __version__, getattr(reactor, "getThreadPool", None)
    )
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
        metrics.watchWorkers(lambda: fleet.workers, reactor.seconds)
        metrics.beforeScrape.append(agentInfo.countForMetrics)

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
            onIntegrityChanged=integrity.masterChanged,
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
        metrics.watchMaster(lambda: link.connection is not None)
        view = link
    controlSocketService(reactor, home.controlSocket, view, registration).setServiceParent(node)
    if setup.api.enabled:
        apiService(
            reactor, setup.api, home, tls, routes(ApiContext(config, view, registration, calls)), metrics
        ).setServiceParent(node)
    if setup.options.metrics_port:
        ReactorLagProbe(reactor, metrics.reactorLag).setServiceParent(node)
        metricsService(reactor, metrics, setup.options.metrics_bind, setup.options.metrics_port).setServiceParent(node)
    return node


__all__ = ["ConfigError", "NodeSetup", "NodeService", "loadNode", "makeNodeService", "portProblem"]
