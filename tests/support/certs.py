"""
Certificates for tests: self-signed node pairs, and a small CA that signs
node certificates with or without subjectAltNames.
"""

from __future__ import annotations

import datetime
import ipaddress
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wazuhcluster.tls import TLSMaterial, makeSelfSigned


@lru_cache(maxsize=None)
def selfSigned(nodeName: str) -> TLSMaterial:
    """A node's own self-signed material (cached: key generation is the slow part)."""
    return TLSMaterial(*makeSelfSigned(nodeName))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class Authority:
    """A certificate authority that signs node certificates for tests."""

    def __init__(self, name: str = "test cluster CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common: str, dnsNames: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> TLSMaterial:
        """A node certificate; no names at all means no subjectAltName extension."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )
        names = [x509.DNSName(n) for n in dnsNames] + [
            x509.IPAddress(ipaddress.ip_address(i)) for i in ips
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return TLSMaterial(key, builder.sign(self.key, hashes.SHA256()), self.certificate)


def writePEM(material: TLSMaterial, keyPath: str, certPath: str, caPath: str | None = None) -> None:
    """Write material as the PEM files an operator would configure."""
    with open(keyPath, "wb") as f:
        f.write(
            material.privateKey.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certPath, "wb") as f:
        f.write(material.certificate.public_bytes(serialization.Encoding.PEM))
    if caPath is not None and material.authority is not None:
        with open(caPath, "wb") as f:
            f.write(material.authority.public_bytes(serialization.Encoding.PEM))
