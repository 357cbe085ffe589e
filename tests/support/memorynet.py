"""
Real TLS between real protocol objects, in memory, on a L{Clock}.

Each connection is a pair of C{TLSMemoryBIOProtocol}s (real OpenSSL
handshakes, real certificates) joined by L{twisted.test.iosim}; nothing
touches a socket and time moves only when a test advances the clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from wazuhcluster import __version__
from wazuhcluster.config import ClusterConfig
from wazuhcluster.master.fleet import Fleet
from wazuhcluster.internal_options import InternalOptions
from wazuhcluster.protocol.link import LinkSettings
from wazuhcluster.master.connection import WorkerConnectionFactory
from wazuhcluster.tls import TLSMaterial, clientOptions, serverOptions

from .certs import selfSigned

KEY = "c98b62a9b6169ac5f67dae55ae4a9088"
OTHER_KEY = "0123456789abcdef0123456789abcdef"
FAST = InternalOptions(
    keep_alive=1.0,
    max_failed_keepalive_attempts=2,
    connection_retry=2.0,
    check_worker_lastkeepalive=1.0,
    max_allowed_time_without_keepalive=5.0,
    handshake_timeout=4.0,
)


def settings(
    nodeName: str,
    nodeType: str = "worker",
    key: str = KEY,
    clusterName: str = "wazuh",
    version: str = __version__,
    options: InternalOptions = FAST,
    tls: TLSMaterial | None = None,
    masterAddress: str = "10.0.0.1",
) -> LinkSettings:
    """A node's link settings, with its own self-signed certificate by default."""
    config = ClusterConfig(
        name=clusterName,
        node_name=nodeName,
        key=key,
        node_type=nodeType,
        nodes=(masterAddress,),
    )
    return LinkSettings.fromConfig(config, options, tls or selfSigned(nodeName), version)


class Connection:
    """One in-memory TLS connection: our protocols at both ends, and its pump."""

    def __init__(self, client: Any, server: Any, pump: iosim.IOPump) -> None:
        self.clientTLS, self.serverTLS, self.pump = client, server, pump
        # Kept here: TLS forgets its wrapped protocol once the connection is lost.
        self.client = client.wrappedProtocol
        self.server = server.wrappedProtocol

    def flush(self) -> None:
        self.pump.flush()


class MemoryNetwork:
    """Connects client and server factories over in-memory TLS."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.connections: list[Connection] = []
        self._port = 40000

    def connect(
        self,
        serverFactory: IProtocolFactory,
        serverTLS: TLSMaterial,
        clientFactory: IProtocolFactory,
        clientTLS: TLSMaterial,
        clientHost: str = "10.0.0.2",
    ) -> Connection:
        self._port += 1
        masterAddress = IPv4Address("TCP", "10.0.0.1", 1516)
        workerAddress = IPv4Address("TCP", clientHost, self._port)
        server = TLSMemoryBIOFactory(serverOptions(serverTLS), False, serverFactory, self.clock).buildProtocol(
            workerAddress
        )
        client = TLSMemoryBIOFactory(clientOptions(clientTLS), True, clientFactory, self.clock).buildProtocol(
            masterAddress
        )
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, masterAddress, workerAddress),
            client,
            iosim.FakeTransport(client, False, workerAddress, masterAddress),
            greet=False,
            clock=self.clock,
        )
        connection = Connection(client, server, pump)
        self.connections.append(connection)
        return connection

    def joinWorker(
        self, master: "MasterHarness", worker: LinkSettings, clientHost: str = "10.0.0.2", sinksFor: Any = None
    ):
        """
        Connect a worker to C{master} and start its handshake; returns the
        connection and the Deferred of C{join()}, after pumping everything.
        """
        from twisted.internet.defer import Deferred

        from wazuhcluster.worker.connection import MasterConnectionFactory

        connection = self.connect(
            master.factory, master.settings.tls, MasterConnectionFactory(worker, self.clock, sinksFor), worker.tls, clientHost
        )
        connection.flush()
        joined = Deferred.fromCoroutine(connection.client.join())
        self.flush()
        return connection, joined

    def connectStranger(
        self, master: "MasterHarness", protocolFactory: IProtocolFactory, clientHost: str = "10.0.0.2"
    ) -> Connection:
        """Connect any client protocol (not a worker) to C{master}, TLS up."""
        connection = self.connect(
            master.factory, master.settings.tls, protocolFactory, selfSigned("stranger"), clientHost
        )
        connection.flush()
        return connection

    def flush(self) -> None:
        """Pump every connection until all are quiet."""
        for _ in range(50):
            if not any(c.pump.flush() for c in self.connections):
                return


class MasterHarness:
    """A master's fleet and connection factory, on a clock, without sockets."""

    def __init__(
        self,
        clock: Clock,
        options: InternalOptions = FAST,
        name: str = "master-node",
        tls: TLSMaterial | None = None,
        sinksFor: Any = None,
    ) -> None:
        self.clock = clock
        self.settings = settings(name, "master", options=options, tls=tls)
        self.fleet = Fleet(self.settings, clock)
        self.factory = WorkerConnectionFactory(self.fleet, self.settings, clock, sinksFor)


class MemoryEndpoint:
    """
    A client endpoint that connects to a L{MasterHarness} over L{MemoryNetwork},
    for driving the worker's real C{ClientService}.
    """

    def __init__(self, network: MemoryNetwork, master: MasterHarness, workerTLS: TLSMaterial) -> None:
        self.network = network
        self.master = master
        self.workerTLS = workerTLS
        self.attempts = 0
        self.refuse = False
        self.silent = False

    def connect(self, factory: IProtocolFactory):
        from twisted.internet.defer import fail
        from twisted.internet.error import ConnectionRefusedError

        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("memory endpoint refusing"))
        serverFactory = self.master.factory
        if self.silent:  # accepts, completes TLS, and never says a word
            from twisted.internet.protocol import Factory, Protocol

            serverFactory = Factory.forProtocol(Protocol)
        connection = self.network.connect(serverFactory, self.master.settings.tls, factory, self.workerTLS)
        return succeed(connection.client)


__all__ = ["KEY", "OTHER_KEY", "FAST", "settings", "MemoryNetwork", "MasterHarness", "MemoryEndpoint", "Connection", "succeed"]
