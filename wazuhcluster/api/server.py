"""
Serving the API: HTTP Basic authentication in front of the routes, on the
address and port of C{api.yaml}, over HTTPS when it says so.

Authentication is twisted.web's C{HTTPAuthSessionWrapper} with a cred
portal whose checker verifies passwords against the users file (scrypt, in
a thread).  Wrong or missing credentials get 401 with C{WWW-Authenticate}
and nothing else: not whether the user exists, not the API's shape.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.application.internet import StreamServerEndpointService
from twisted.cred.portal import IRealm, Portal
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import implementer

from ..config import ConfigError
from ..tls import TLSMaterial
from .router import ApiResource, Route
from .settings import ApiSettings, apiSettingsPath
from .users import ApiUsers, ApiUsersChecker, usersPath

#: The realm of the Basic challenge.
REALM = b"wazuh"


@implementer(IRealm)
class _ApiRealm:
    def __init__(self, resource: IResource) -> None:
        self.resource = resource

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, IResource, Any]:
        if IResource in interfaces:
            return IResource, self.resource, lambda: None
        raise NotImplementedError()


def apiSite(routes: list[Route], users: ApiUsers) -> Site:
    """The API's site: every request authenticated, then routed."""
    portal = Portal(_ApiRealm(ApiResource(routes)), [ApiUsersChecker(users)])
    site = Site(HTTPAuthSessionWrapper(portal, [BasicCredentialFactory(REALM)]))
    site.displayTracebacks = False
    site.noisy = False
    return site


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


def apiService(
    reactor: Any, settings: ApiSettings, home: Any, nodeTLS: TLSMaterial, routes: list[Route]
) -> StreamServerEndpointService:
    """The service listening for the API, ready to start."""
    users = ApiUsers(usersPath(home))
    site = apiSite(routes, users)
    if settings.https:
        material = _loadPair(settings, apiSettingsPath(home)) if settings.cert else nodeTLS
        options = CertificateOptions(privateKey=material.privateKey, certificate=material.certificate)
        endpoint = SSL4ServerEndpoint(reactor, settings.port, options, interface=settings.host)
    elif ":" in settings.host:
        endpoint = TCP6ServerEndpoint(reactor, settings.port, interface=settings.host)
    else:
        endpoint = TCP4ServerEndpoint(reactor, settings.port, interface=settings.host)
    scheme = "https" if settings.https else "http"
    service = _ApiService(endpoint, site, f"{scheme}://{settings.host}:{settings.port}")
    service._raiseSynchronously = True
    return service


class _ApiService(StreamServerEndpointService):
    """The API's listening port, which says where it listens once it does."""

    log = Logger()
    logTag = "[API]"

    def __init__(self, endpoint: Any, factory: Any, where: str) -> None:
        super().__init__(endpoint, factory)
        self.where = where

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: Any) -> Any:
        self.log.info("API listening on {where}.", where=self.where)
        return port
