"""
Sealing of the messages between nodes with AES-256-GCM under the cluster key.

TLS already protects the link; sealing is the second lock the Wazuh cluster
has always had ("all communications among nodes are encrypted using AES"),
and it is what makes a peer without the cluster key useless even when it
completes TLS.

Keys are never the cluster key itself.  From it we derive a root key
(HKDF-SHA256), and from the root key, per connection, one key per direction,
salted with both peers' handshake nonces and bound to the TLS channel.  So a
message recorded on one connection means nothing on another.  Inside one
connection every sealed message carries its sequence number: the receiver
accepts exactly the next one, which rejects replayed, dropped and reordered
messages, while GCM rejects tampering and messages sealed under another key.
"""

from __future__ import annotations

import hmac
import struct
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Bytes a sealed message adds to its plaintext: 8 of sequence number, 16 of tag.
SEAL_OVERHEAD = 8 + 16

_SEQUENCE = struct.Struct("!Q")
_ROOT_SALT = b"wazuhcluster/v1 root"
WORKER_TO_MASTER = b"worker->master"
MASTER_TO_WORKER = b"master->worker"


class SealingError(Exception):
    """A sealed message was rejected; the message says why, for the log."""


def rootKey(clusterKey: str) -> bytes:
    """The 32-byte root secret every other key and proof derives from."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_ROOT_SALT, info=b"root"
    ).derive(clusterKey.encode("ascii"))


def keyProof(root: bytes, role: bytes, transcript: bytes) -> bytes:
    """
    Proof that the sender holds the cluster key, bound to C{transcript}
    (both nonces and the TLS channel), for the side named by C{role}.
    """
    return hmac.new(root, b"proof " + role + b"\0" + transcript, sha256).digest()


def proofMatches(expected: bytes, received: bytes) -> bool:
    """Compare two proofs in constant time."""
    return hmac.compare_digest(expected, received)


class Sealer:
    """Seals the messages going one way on one connection."""

    def __init__(self, key: bytes, direction: bytes) -> None:
        self._aead = AESGCM(key)
        self._direction = direction
        self._next = 0

    def seal(self, plaintext: bytes) -> bytes:
        """Return sequence number, ciphertext and tag of C{plaintext}."""
        prefix = _SEQUENCE.pack(self._next)
        self._next += 1
        return prefix + self._aead.encrypt(b"\0\0\0\0" + prefix, plaintext, self._direction)


class Opener:
    """Opens the messages coming one way on one connection, strictly in order."""

    def __init__(self, key: bytes, direction: bytes) -> None:
        self._aead = AESGCM(key)
        self._direction = direction
        self._expected = 0

    def open(self, sealed: bytes) -> bytes:
        """
        Return the plaintext of C{sealed}, or raise L{SealingError} if it is
        not the next message of this stream sealed under this key.
        """
        if len(sealed) < SEAL_OVERHEAD:
            raise SealingError(f"sealed message too short ({len(sealed)} bytes)")
        (sequence,) = _SEQUENCE.unpack_from(sealed)
        if sequence != self._expected:
            raise SealingError(
                f"message out of sequence (got {sequence}, expected {self._expected}):"
                " replayed, dropped or reordered"
            )
        try:
            plaintext = self._aead.decrypt(
                b"\0\0\0\0" + sealed[:8], sealed[8:], self._direction
            )
        except InvalidTag:
            raise SealingError(
                "message failed authentication: tampered with, or sealed under another cluster key"
            ) from None
        self._expected += 1
        return plaintext


def sessionKeys(
    root: bytes, workerNonce: bytes, masterNonce: bytes, binding: bytes
) -> tuple[bytes, bytes]:
    """
    The worker-to-master and master-to-worker keys of one connection.
    """
    material = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=workerNonce + masterNonce,
        info=b"wazuhcluster/v1 session " + binding,
    ).derive(root)
    return material[:32], material[32:]


def sealersFor(
    role: str, root: bytes, workerNonce: bytes, masterNonce: bytes, binding: bytes
) -> tuple[Sealer, Opener]:
    """The outbound L{Sealer} and inbound L{Opener} of the side C{role}."""
    toMaster, toWorker = sessionKeys(root, workerNonce, masterNonce, binding)
    if role == "master":
        return Sealer(toWorker, MASTER_TO_WORKER), Opener(toMaster, WORKER_TO_MASTER)
    return Sealer(toMaster, WORKER_TO_MASTER), Opener(toWorker, MASTER_TO_WORKER)
