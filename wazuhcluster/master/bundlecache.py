"""
Bundles built once per change, streamed to every worker that needs them.

When the master's files change, every worker needs the same files: the
edited rule, or the whole tree for workers that start empty.  Building a
bundle (reading each file twice over, compressing) is most of a transfer's
cost, so the master builds the bundle of a (generation, files to send,
files to delete) once, in a thread, into an anonymous file under
C{queue/cluster/} (unlinked at once: a killed master leaves nothing
behind), and streams that file to each worker that asks for the same
delta.  Bundles of an older generation are dropped when a newer one is
asked for; a worker still streaming one keeps reading it, and its space
is freed when the last reader is done.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import IO, Any, Callable, Iterator

from attrs import frozen
from twisted.internet.defer import Deferred

from ..sync.bundle import BundleWriter

__all__ = ["BuiltBundle", "BundleCache"]

#: Bytes read from a built bundle per chunk sent.
_READ_SIZE = 32 * 1024

#: Bundles kept per generation: distinct deltas are few (the fresh workers'
#: and the edited files'); a worker with its own odd delta past these gets
#: a bundle built for it, not kept.
MAX_KEPT = 8


@frozen
class BuiltBundle:
    """A bundle written to C{file}, and what the writer reported while building it."""

    file: IO[bytes]
    files: int
    deletions: int
    sent: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    bytesOut: int

    def chunks(self) -> Iterator[bytes]:
        """The bundle's bytes, in pieces (blocking reads: pull them from a thread)."""
        fd, offset = self.file.fileno(), 0
        while block := os.pread(fd, _READ_SIZE, offset):
            offset += len(block)
            yield block


class BundleCache:
    """The bundles of the current generation, each built once."""

    def __init__(self, folder: str, runInThread: Callable[..., Deferred]) -> None:
        self.folder = folder
        self.runInThread = runInThread
        self.generation = -1
        #: Each kept bundle: [the built bundle or None while building, its waiters].
        self._bundles: dict[bytes, list[Any]] = {}
        #: Bundles built since start (what a benchmark or test looks at).
        self.built = 0

    def bundle(
        self, generation: int, sending: tuple[str, ...], deletions: tuple[str, ...], home: Callable[[str], str]
    ) -> Deferred[BuiltBundle]:
        """
        The bundle that sends C{sending} and deletes C{deletions}, for the
        master's files at C{generation}: built now, or being built, or built
        already for another worker.  C{home} maps a relative path to the file
        to read.
        """
        if generation != self.generation:
            self.clear()
            self.generation = generation
        key = hashlib.sha256("\0".join(sending).encode("utf-8", "surrogatepass") + b"\1"
                             + "\0".join(deletions).encode("utf-8", "surrogatepass")).digest()
        waiting = Deferred()
        entry = self._bundles.get(key)
        if entry is None:
            entry = [None, [waiting]]
            keep = len(self._bundles) < MAX_KEPT
            if keep:
                self._bundles[key] = entry
            self.built += 1
            self.runInThread(self._build, sending, deletions, home).addBoth(self._built, key, entry, keep)
        elif entry[0] is None:
            entry[1].append(waiting)
        else:
            waiting.callback(entry[0])
        return waiting

    def _built(self, result: Any, key: bytes, entry: list[Any], keep: bool) -> None:
        waiters, entry[1] = entry[1], []
        if isinstance(result, BuiltBundle):
            if keep and self._bundles.get(key) is entry:
                entry[0] = result
            for waiting in waiters:
                waiting.callback(result)
            return
        if self._bundles.get(key) is entry:
            del self._bundles[key]
        for waiting in waiters:
            waiting.errback(result)

    def clear(self) -> None:
        """Forget every bundle (each file goes with its last reader)."""
        self._bundles.clear()

    def _build(self, sending: tuple[str, ...], deletions: tuple[str, ...], home: Callable[[str], str]) -> BuiltBundle:
        """Write the bundle to a file under the cache's folder (blocking)."""
        writer = BundleWriter(
            ((p, home(p)) for p in sending), deletions, spoolFolder=self.folder,
            # Level 1: four times faster than 6 for 2% larger bundles
            # (bench/integrity.py); the link is rarely the bottleneck.
            level=1,
        )
        os.makedirs(self.folder, mode=0o770, exist_ok=True)
        f = tempfile.TemporaryFile(dir=self.folder)
        try:
            for chunk in writer.chunks():
                f.write(chunk)
            f.flush()
        except BaseException:
            f.close()
            raise
        return BuiltBundle(
            f, len(sending), len(deletions), tuple(writer.sent), tuple(writer.skipped),
            tuple(writer.failed), writer.bytesOut,
        )
