"""
Digests of a node's synchronised files: one number says whether two nodes
hold the same files, 256 more say where they differ.

Every file is put in one of L{BUCKETS} buckets by its path (a CRC-32 of the
path, so a file never changes bucket) and described by a 128-bit leaf, the
MD5 of its path and content MD5.  A bucket's digest is the XOR of its
leaves, so adding, removing or changing one file updates it in constant
time, whatever the order files were found in; the root is the MD5 of the
256 bucket digests.  Two nodes with equal roots hold the same files (paths
and contents); with different roots, the buckets whose digests differ hold
every difference, and only their files need to be listed.

This is the two-level form of the Merkle trees of Dynamo and Cassandra's
anti-entropy: with 50,000 files a bucket holds about 200, so one edited
file costs a listing of 200 paths instead of 50,000.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Iterable, Mapping

from attrs import frozen

__all__ = ["BUCKETS", "DIGEST_SIZE", "DigestError", "TreeDigest", "bucketOf", "leafOf"]

#: Buckets a node's files are spread over.
BUCKETS = 256

#: Bytes of one bucket digest (and of the root).
DIGEST_SIZE = 16

_EMPTY = (0,) * BUCKETS


class DigestError(ValueError):
    """A digest from a peer that cannot be used; C{str()} says why."""


def bucketOf(relpath: str) -> int:
    """The bucket of the file at C{relpath}, from 0 to L{BUCKETS} - 1."""
    return zlib.crc32(relpath.encode("utf-8", "surrogatepass")) & (BUCKETS - 1)


def leafOf(relpath: str, md5: str) -> int:
    """The 128-bit leaf of a file: its path and its content's MD5, hashed together."""
    data = relpath.encode("utf-8", "surrogatepass") + b"\0" + md5.encode("ascii")
    return int.from_bytes(hashlib.md5(data, usedforsecurity=False).digest(), "big")


@frozen
class TreeDigest:
    """The 256 bucket digests of a set of files, and their root."""

    buckets: tuple[int, ...] = _EMPTY

    @classmethod
    def ofLeaves(cls, leaves: Iterable[tuple[int, int]]) -> "TreeDigest":
        """The digest of files given as (bucket, leaf) pairs."""
        buckets = [0] * BUCKETS
        for bucket, leaf in leaves:
            buckets[bucket] ^= leaf
        return cls(tuple(buckets))

    @classmethod
    def ofFiles(cls, files: Mapping[str, object]) -> "TreeDigest":
        """The digest of a manifest (path -> entry with an C{md5})."""
        return cls.ofLeaves((bucketOf(p), leafOf(p, e.md5)) for p, e in files.items())  # type: ignore[attr-defined]

    def encode(self) -> bytes:
        """The 256 bucket digests, 16 bytes each, as they cross the wire."""
        return b"".join(b.to_bytes(DIGEST_SIZE, "big") for b in self.buckets)

    @classmethod
    def decode(cls, data: bytes) -> "TreeDigest":
        """The digest L{encode} made; raise L{DigestError} if C{data} cannot be one."""
        if len(data) != BUCKETS * DIGEST_SIZE:
            raise DigestError(f"a digest has {BUCKETS * DIGEST_SIZE} bytes, not {len(data)}")
        return cls(tuple(
            int.from_bytes(data[i:i + DIGEST_SIZE], "big") for i in range(0, len(data), DIGEST_SIZE)
        ))

    @property
    def root(self) -> str:
        """The MD5 of the bucket digests, in hexadecimal: equal roots, equal files."""
        return hashlib.md5(self.encode(), usedforsecurity=False).hexdigest()

    def differing(self, other: "TreeDigest") -> list[int]:
        """The buckets whose digests differ from C{other}'s, in order."""
        return [i for i, (a, b) in enumerate(zip(self.buckets, other.buckets)) if a != b]
