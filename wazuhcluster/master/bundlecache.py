"""
Bundles built once per change, streamed to every worker that needs them.

When the master's files change, every worker needs the same files: the
edited rule, or the whole tree for workers that start empty.  Building a
bundle (reading each file twice over, compressing) is most of a transfer's
cost, so the master builds the bundle of a (generation, files to send,
files to delete) once, in a thread, into an anonymous file under
C{queue/cluster/} (unlinked at once: a killed master leaves nothing
behind), and streams that file to each worker that asks for the same
delta.

Streaming does not wait for the build: the bundle is built in steps, and
each worker's stream sends what is built so far and waits for the next step
(the first worker's transfer overlaps the build, as it would with a bundle
of its own; the workers that come later read what is already there).

Bundles of an older generation are dropped when a newer one is asked for;
a worker still streaming one keeps reading it, and its space is freed when
the last reader is done.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import IO, Callable, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from ..sync.bundle import BundleWriter

__all__ = ["BundleCache", "BundleReading", "SharedBundle"]

#: Bytes read from a built bundle per chunk sent.
_READ_SIZE = 32 * 1024

#: Compressed bytes one step of the build writes before readers are told
#: (a step is one trip to a thread: a few thousand small files).
_BUILD_STEP = 128 * 1024

#: Bundles kept per generation: distinct deltas are few (the fresh workers'
#: and the edited files'); a worker with its own odd delta past these gets
#: a bundle built for it, not kept.
MAX_KEPT = 8


class SharedBundle:
    """
    A bundle being written to C{file}, or written: L{reading} streams it
    as far as it is built.  What the writer reported (C{sent}, C{skipped},
    C{failed}, C{bytesOut}) is set once the build is done, which is before
    any reading ends.
    """

    def __init__(self, files: int, deletions: int) -> None:
        self.files = files
        self.deletions = deletions
        self.file: IO[bytes] | None = None
        #: Bytes written to the file so far.
        self.length = 0
        self.done = False
        self.error: Failure | None = None
        self.sent: tuple[str, ...] = ()
        self.skipped: tuple[str, ...] = ()
        self.failed: tuple[tuple[str, str], ...] = ()
        self.bytesOut = 0
        self._waiting: list[Deferred[None]] = []

    def reading(self, runInThread: Callable[..., Deferred]) -> BundleReading:
        """A new reader of this bundle, from its start."""
        return BundleReading(self, runInThread)

    def chunks(self) -> Iterator[bytes]:
        """The bytes of a bundle whose build is done, in pieces (blocking reads)."""
        if not self.done or self.file is None:
            raise RuntimeError("SharedBundle.chunks() before the bundle was built")
        fd, offset = self.file.fileno(), 0
        while block := os.pread(fd, _READ_SIZE, offset):
            offset += len(block)
            yield block

    def _grown(self) -> Deferred[None]:
        """Fires when the bundle grew, or its build ended."""
        if self.done:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def _tell(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)


class BundleReading:
    """One worker's read of a L{SharedBundle}, chunk by chunk."""

    def __init__(self, bundle: SharedBundle, runInThread: Callable[..., Deferred]) -> None:
        self.bundle = bundle
        self.runInThread = runInThread
        self.offset = 0
        self._closed = False

    async def next(self) -> bytes | None:
        """The next chunk, once built; L{None} at the end of the bundle."""
        bundle = self.bundle
        while not self._closed:
            if self.offset < bundle.length and bundle.file is not None:
                size = min(_READ_SIZE, bundle.length - self.offset)
                block: bytes = await self.runInThread(os.pread, bundle.file.fileno(), size, self.offset)
                if not block:
                    raise OSError(f"the bundle ends {self.offset} bytes in, not {bundle.length}")
                self.offset += len(block)
                return block
            if bundle.error is not None:
                bundle.error.raiseException()
            if bundle.done:
                return None
            await bundle._grown()
        return None

    def close(self) -> None:
        """Stop reading."""
        self._closed = True


class BundleCache:
    """The bundles of the current generation, each built once."""

    def __init__(self, folder: str, runInThread: Callable[..., Deferred]) -> None:
        self.folder = folder
        self.runInThread = runInThread
        self.generation = -1
        #: Each kept bundle, being built or built.
        self._bundles: dict[bytes, SharedBundle] = {}
        #: Bundles built since start (what a benchmark or test looks at).
        self.built = 0

    def bundle(
        self, generation: int, sending: tuple[str, ...], deletions: tuple[str, ...], home: Callable[[str], str]
    ) -> Deferred[SharedBundle]:
        """
        The bundle that sends C{sending} and deletes C{deletions}, for the
        master's files at C{generation}: being built, or built already for
        another worker, or its build started now.  C{home} maps a relative
        path to the file to read.
        """
        if generation != self.generation:
            self.clear()
            self.generation = generation
        key = hashlib.sha256("\0".join(sending).encode("utf-8", "surrogatepass") + b"\1"
                             + "\0".join(deletions).encode("utf-8", "surrogatepass")).digest()
        bundle = self._bundles.get(key)
        if bundle is None:
            bundle = SharedBundle(len(sending), len(deletions))
            if len(self._bundles) < MAX_KEPT:
                self._bundles[key] = bundle
            self.built += 1
            Deferred.fromCoroutine(self._build(bundle, key, sending, deletions, home))
        return succeed(bundle)

    def clear(self) -> None:
        """Forget every bundle (each file goes with its last reader)."""
        self._bundles.clear()

    async def _build(
        self, bundle: SharedBundle, key: bytes, sending: tuple[str, ...], deletions: tuple[str, ...],
        home: Callable[[str], str],
    ) -> None:
        """Write the bundle to a file under the cache's folder, in steps in threads, telling readers."""
        writer = BundleWriter(
            ((p, home(p)) for p in sending), deletions, spoolFolder=self.folder,
            # Level 1: four times faster than 6 for 2% larger bundles
            # (bench/integrity.py); the link is rarely the bottleneck.
            level=1,
        )
        chunks = writer.chunks()
        try:
            bundle.file = await self.runInThread(self._create)
            while True:
                written, more = await self.runInThread(_step, chunks, bundle.file)
                bundle.length += written
                if not more:
                    break
                bundle._tell()
            bundle.sent, bundle.skipped = tuple(writer.sent), tuple(writer.skipped)
            bundle.failed, bundle.bytesOut = tuple(writer.failed), writer.bytesOut
        except BaseException:
            bundle.error = Failure()
            chunks.close()
            if self._bundles.get(key) is bundle:
                del self._bundles[key]
        bundle.done = True
        bundle._tell()

    def _create(self) -> IO[bytes]:
        """An anonymous file for a bundle (blocking)."""
        os.makedirs(self.folder, mode=0o770, exist_ok=True)
        return tempfile.TemporaryFile(dir=self.folder)


def _step(chunks: Iterator[bytes], file: IO[bytes]) -> tuple[int, bool]:
    """
    Write the next L{_BUILD_STEP} bytes or so of a bundle to C{file}
    (blocking); say how many, and whether more follow.
    """
    written = 0
    fd = file.fileno()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        written += len(chunk)
        if written >= _BUILD_STEP:
            return written, True
    return written, False
