"""
TLS for the link between nodes: certificates, contexts, and the channel binding.

Two modes, chosen by the configuration:

 - Self-signed (the default, nothing to set up): each node makes its own key
   pair and certificate under HOME on first start.  TLS then encrypts but
   does not authenticate; authentication is the cluster-key proof of the
   handshake, which is bound to this TLS channel (L{channelBinding}) so that
   a man in the middle who terminates TLS on both sides cannot relay it.
 - CA (``<ca_cert>``, ``<node_cert>``, ``<node_key>``): real mutual TLS.  The
   master accepts only clients with a certificate signed by the CA, and a
   worker checks that the master's certificate is signed by the CA and names
   the configured master address in its subjectAltName.  The key proof runs
   as well.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from hashlib import sha256

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported publicly
from twisted.internet.ssl import CertificateOptions
from zope.interface import implementer

from .config import ClusterConfig, ConfigError
from .files import writeFileAtomically
from .home import WazuhHome

#: Label of the TLS exporter (RFC 5705) value the key proof is bound to.
EXPORTER_LABEL = b"EXPORTER-wazuhcluster-v1"


class PeerIdentityError(Exception):
    """The peer's certificate does not name the address we connected to."""


@frozen
class TLSMaterial:
    """A node's key and certificate, and the CA to check peers against (CA mode)."""

    privateKey: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    authority: x509.Certificate | None = None

    @property
    def verifiesPeers(self) -> bool:
        return self.authority is not None


def makeSelfSigned(nodeName: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new EC P-256 key and a ten-year self-signed certificate naming C{nodeName}."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, nodeName)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(nodeName)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def ensureNodeCertificate(home: WazuhHome, nodeName: str) -> TLSMaterial:
    """
    The node's own key pair and self-signed certificate, made under HOME
    on first start (key 0600, certificate 0640) and reused afterwards.
    """
    if not (os.path.exists(home.nodeKey) and os.path.exists(home.nodeCert)):
        key, certificate = makeSelfSigned(nodeName)
        writeFileAtomically(
            home.nodeKey,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            mode=0o600,
        )
        writeFileAtomically(
            home.nodeCert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o640
        )
    return _loadPair(home.nodeKey, home.nodeCert, None, "<cluster>")


def _readPEM(path: str, element: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{element}: cannot read {path}: {e.strerror}") from None


def _loadPair(
    keyPath: str, certPath: str, caPath: str | None, source: str
) -> TLSMaterial:
    try:
        key = serialization.load_pem_private_key(_readPEM(keyPath, "<node_key>"), None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: <node_key> {keyPath} is not a PEM private key: {e}") from None
    try:
        certificate = x509.load_pem_x509_certificate(_readPEM(certPath, "<node_cert>"))
    except ValueError as e:
        raise ConfigError(f"{source}: <node_cert> {certPath} is not a PEM certificate: {e}") from None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(
            f"{source}: <node_cert> {certPath} does not match the private key in <node_key> {keyPath}"
        )
    authority = None
    if caPath is not None:
        try:
            authority = x509.load_pem_x509_certificate(_readPEM(caPath, "<ca_cert>"))
        except ValueError as e:
            raise ConfigError(f"{source}: <ca_cert> {caPath} is not a PEM certificate: {e}") from None
    return TLSMaterial(key, certificate, authority)


def loadTLSMaterial(home: WazuhHome, config: ClusterConfig, source: str) -> TLSMaterial:
    """
    The TLS material of this node: the configured CA and node certificate
    when the configuration names them, else the node's own self-signed pair.
    """
    if config.ca_cert and config.node_cert and config.node_key:
        return _loadPair(
            home.resolve(config.node_key),
            home.resolve(config.node_cert),
            home.resolve(config.ca_cert),
            source,
        )
    return ensureNodeCertificate(home, config.node_name)


@implementer(IOpenSSLTrustRoot)
class _AuthorityTrustRoot:
    """Trust exactly one CA certificate, given as a cryptography object."""

    def __init__(self, authority: x509.Certificate) -> None:
        self._authority = authority

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.get_cert_store().add_cert(crypto.X509.from_cryptography(self._authority))


class _AnyClientCertificateOptions(CertificateOptions):
    """
    Server options that ask the client for its certificate and accept any:
    in self-signed mode the certificate is not trusted, only bound into the
    key proof.
    """

    def getContext(self) -> SSL.Context:
        context = self._context
        if context is None:
            context = super().getContext()
            context.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: True)
        return context


def serverOptions(material: TLSMaterial) -> CertificateOptions:
    """TLS options of the master's listening port."""
    if material.authority is not None:
        return CertificateOptions(
            privateKey=material.privateKey,
            certificate=material.certificate,
            # A trust root makes the server require a client certificate.
            trustRoot=_AuthorityTrustRoot(material.authority),
        )
    return _AnyClientCertificateOptions(
        privateKey=material.privateKey, certificate=material.certificate
    )


def clientOptions(material: TLSMaterial) -> CertificateOptions:
    """
    TLS options of a worker's connection to the master.  In CA mode the chain
    is verified by OpenSSL here and the master's name by L{checkPeerIdentity}
    once the handshake is done.
    """
    if material.authority is not None:
        return CertificateOptions(
            privateKey=material.privateKey,
            certificate=material.certificate,
            trustRoot=_AuthorityTrustRoot(material.authority),
        )
    return CertificateOptions(
        privateKey=material.privateKey, certificate=material.certificate, verify=False
    )


def checkPeerIdentity(certificate: x509.Certificate, address: str) -> None:
    """
    Raise L{PeerIdentityError} unless C{certificate}'s subjectAltName names
    C{address} (an IP address or a DNS name).  Both of service-identity's
    exceptions are caught: a certificate with no subjectAltName raises
    C{CertificateError}, which Twisted's own check lets through.
    """
    try:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            verify_certificate_hostname(certificate, address)
        else:
            verify_certificate_ip_address(certificate, str(ip))
    except (VerificationError, CertificateError):
        raise PeerIdentityError(
            f"the master's certificate does not name {address} in its subjectAltName ({_namedIn(certificate)})"
        ) from None


def _namedIn(certificate: x509.Certificate) -> str:
    """What a certificate's subjectAltName names, in words."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no subjectAltName"
    names = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return f"it names {', '.join(names)}" if names else "it names no DNS name or IP address"


def fingerprint(certificate: x509.Certificate | None) -> bytes:
    """SHA-256 of a certificate's DER form (empty for no certificate)."""
    if certificate is None:
        return b""
    return sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def peerCertificate(transport: object) -> x509.Certificate | None:
    """The certificate the peer presented on a TLS transport, if any."""
    peer = transport.getPeerCertificate()  # type: ignore[attr-defined]
    return None if peer is None else peer.to_cryptography()


def channelBinding(transport: object, serverCert: x509.Certificate | None,
                   clientCert: x509.Certificate | None) -> bytes:
    """
    What the key proof is bound to: the TLS exporter value of this session
    and the fingerprints of both certificates.  A man in the middle has two
    different TLS sessions with two different values, so a proof relayed
    from one side does not verify on the other.
    """
    connection = transport.getHandle()  # type: ignore[attr-defined]
    exported = connection.export_keying_material(EXPORTER_LABEL, 32)
    return exported + fingerprint(serverCert) + fingerprint(clientCert)
