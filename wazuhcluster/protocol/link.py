"""
What both ends of a cluster link know before it opens.
"""

from __future__ import annotations

from attrs import frozen
from cryptography import x509

from ..config import ClusterConfig
from ..internal_options import InternalOptions
from ..tls import TLSMaterial
from .sealing import rootKey


@frozen
class LinkSettings:
    """A node's side of the handshake: who it is, its secrets and timings."""

    clusterName: str
    nodeName: str
    nodeType: str
    version: str
    masterAddress: str
    root: bytes
    tls: TLSMaterial
    options: InternalOptions
    #: The master's port (for log lines; 0 when unknown).
    masterPort: int = 0

    @classmethod
    def fromConfig(
        cls, config: ClusterConfig, options: InternalOptions, tls: TLSMaterial, version: str
    ) -> "LinkSettings":
        return cls(
            clusterName=config.name,
            nodeName=config.node_name,
            nodeType=config.node_type,
            version=version,
            masterAddress=config.master_address,
            root=rootKey(config.key),
            tls=tls,
            options=options,
            masterPort=config.port,
        )

    @property
    def certificate(self) -> x509.Certificate:
        return self.tls.certificate


def majorMinor(version: str) -> str:
    """C{"4.9"} of C{"4.9.0"}: peers must agree on it."""
    return ".".join(version.split(".")[:2])
