"""
Serving the API: credentials checked when a request's headers arrive, then
routed; on the address and port of C{api.yaml}, over HTTPS when it says so.

The HTTP layer (L{wazuhcluster.api.guard}) holds every client to the limits
of C{api.yaml} (connections, time, body size) and checks its HTTP Basic
credentials (L{wazuhcluster.api.authn}) before it keeps any of the body.
Wrong or missing credentials get 401 with C{WWW-Authenticate} and nothing
else: not whether the user exists, not the API's shape.  HTTPS is TLS
wrapped around the site inside the connection limiter, so that a connection
over the caps is closed before it costs a handshake.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from ..config import ConfigError
from ..tls import TLSMaterial
from .authn import Authenticator
from .guard import ConnectionLimiter, GuardedSite, effectiveMaxConnections
from .router import ApiResource, Route
from .settings import ApiLimits, ApiSettings, apiSettingsPath
from .users import ApiUsers, usersPath


def apiSite(routes: list[Route], authenticator: Authenticator, limits: ApiLimits, reactor: Any) -> GuardedSite:
    """The API's site: every request authenticated, then routed."""
    return GuardedSite(ApiResource(routes), authenticator, limits, reactor)


def _loadPair(settings: ApiSettings, source: str) -> TLSMaterial:
    assert settings.cert is not None and settings.key is not None
    try:
        with open(settings.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        with open(settings.cert, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
    except OSError as e:
        raise ConfigError(f"{source}: https: cannot read {e.filename}: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: https: {settings.cert} / {settings.key}: not a PEM certificate and key ({e})") from None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(f"{source}: https: the certificate {settings.cert} does not match the key {settings.key}")
    return TLSMaterial(key, certificate)


def tcpServerEndpoint(reactor: Any, host: str, port: int) -> TCP4ServerEndpoint | TCP6ServerEndpoint:
    """A TCP endpoint listening on C{host} (an IPv4 or IPv6 address) and C{port}."""
    if ":" in host:
        return TCP6ServerEndpoint(reactor, port, interface=host)
    return TCP4ServerEndpoint(reactor, port, interface=host)


def apiService(
    reactor: Any, settings: ApiSettings, home: Any, nodeTLS: TLSMaterial, routes: list[Route],
    metrics: Any = None,
) -> StreamServerEndpointService:
    """
    The service listening for the API, ready to start; answered requests
    are counted in C{metrics} (the node's L{NodeMetrics}) when given.
    """
    limits = settings.limits
    authenticator = Authenticator(ApiUsers(usersPath(home)), limits, reactor)
    site = apiSite(routes, authenticator, limits, reactor)
    site.metrics = metrics
    factory: Any = site
    if settings.https:
        material = _loadPair(settings, apiSettingsPath(home)) if settings.cert else nodeTLS
        options = CertificateOptions(privateKey=material.privateKey, certificate=material.certificate)
        factory = TLSMemoryBIOFactory(options, False, site)
    maxConnections = effectiveMaxConnections(limits)
    limiter = ConnectionLimiter(factory, maxConnections, limits.max_connections_per_address, site.throttled)
    endpoint = tcpServerEndpoint(reactor, settings.host, settings.port)
    scheme = "https" if settings.https else "http"
    service = _ApiService(endpoint, limiter, f"{scheme}://{settings.host}:{settings.port}", authenticator)
    service._raiseSynchronously = True
    return service


class _ApiService(StreamServerEndpointService):
    """The API's listening port, which says where it listens once it does."""

    log = Logger()
    logTag = "[API]"

    def __init__(self, endpoint: Any, factory: ConnectionLimiter, where: str, authenticator: Authenticator) -> None:
        super().__init__(endpoint, factory)
        self.where = where
        self.authenticator = authenticator

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def startService(self) -> None:
        self.authenticator.start()
        super().startService()

    def stopService(self) -> Any:
        d = super().stopService()
        self.authenticator.stop()
        return d

    def _listening(self, port: Any) -> Any:
        limiter = self.factory
        self.log.info(
            "API listening on {where} (at most {total} connections, {each} per address).",
            where=self.where, total=limiter.maxConnections, each=limiter.maxPerAddress,
        )
        return port
