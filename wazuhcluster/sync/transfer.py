"""
Receiving bundles of files over a stream, on either side of the link.

A L{BundleSink} is the sink of a stream that carries a bundle: it decodes
and stages each chunk in a thread as it arrives (memory bounded), and when
the stream has arrived whole it commits every file at once.  If the stream
breaks (link lost, stall, disk full, a malformed or hostile bundle) every
temporary file is removed and nothing already in place is touched.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .bundle import BundleReader, Limits
from .stager import ApplyResult, Stager

#: The most bytes a manifest stream may carry (a million files fit).
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

#: The most compressed bytes one bundle stream may carry.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024 * 1024

#: The most bytes of a list of paths (a request for files).
MAX_PATH_LIST_BYTES = 64 * 1024 * 1024


def jsonObject(text: str) -> dict[str, Any]:
    """A JSON object from a peer's answer; ValueError for anything else."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("the peer's answer is nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("the peer's answer is not a JSON object")
    return value


def pathLines(paths: Iterable[str], pieceSize: int = 32 * 1024) -> Iterator[bytes]:
    """Paths as newline-separated UTF-8, in pieces of about C{pieceSize}."""
    piece: list[bytes] = []
    size = 0
    for path in paths:
        line = path.encode("utf-8") + b"\n"
        piece.append(line)
        size += len(line)
        if size >= pieceSize:
            yield b"".join(piece)
            piece, size = [], 0
    if piece:
        yield b"".join(piece)


class PathListSink:
    """The sink of a list of paths; calls C{whenComplete(paths)} once it arrived whole."""

    def __init__(self, whenComplete: Callable[[list[str]], None], maxPaths: int = 1_000_000) -> None:
        self.whenComplete = whenComplete
        self.maxPaths = maxPaths
        self.buffer = b""
        self.paths: list[str] = []

    def feed(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if len(self.buffer) > 8192:
            raise ValueError("a path in the list is longer than 8192 bytes")
        self.paths.extend(line.decode("utf-8", "replace") for line in lines if line)
        if len(self.paths) > self.maxPaths:
            raise ValueError(f"more than {self.maxPaths} paths")

    def close(self) -> str:
        if self.buffer:
            raise ValueError("the list of paths ends in the middle of a line")
        self.whenComplete(self.paths)
        return json.dumps({"paths": len(self.paths)})

    def abort(self, reason: str) -> None:
        pass


class BundleSink:
    """
    A bundle stream arriving: staged as it comes (in a thread), committed
    at the end, or cleaned away if it breaks.
    """

    log = Logger()

    def __init__(
        self,
        stager: Stager,
        runInThread: Callable[..., Deferred],
        peer: str,
        finished: Callable[[dict[str, Any] | None, str | None], None],
        logTag: str,
        limits: Limits = Limits(),
    ) -> None:
        """
        @param peer: how the log names the sender.
        @param finished: told the result once committed, or the reason it broke.
        """
        self.stager = stager
        self.reader = BundleReader(stager, limits)
        self.runInThread = runInThread
        self.peer = peer
        self.finished = finished
        self.logTag = logTag
        self._done = False
        #: What the commit put in place (written and deleted paths), once done.
        self.applied: ApplyResult | None = None

    def feed(self, data: bytes) -> Deferred[None]:
        return self.runInThread(self.reader.feed, data)

    def _commit(self) -> dict[str, Any]:
        try:
            bundle = self.reader.finish()
            applied = self.stager.commit()
        except BaseException:
            self.stager.abort()
            raise
        self.applied = applied
        return {
            "written": len(applied.written),
            "deleted": len(applied.deleted),
            "pruned": len(applied.pruned),
            "refused": [list(r) for r in bundle.refused[:20]],
            "refusedCount": len(bundle.refused),
            "failed": [list(f) for f in applied.failed[:20]],
            "failedCount": len(applied.failed),
            "bytes": bundle.bytesIn,
        }

    def close(self) -> Deferred[str]:
        def committed(result: dict[str, Any]) -> str:
            for path, reason in result["refused"]:
                self.log.warn(
                    "Refused a file from {peer}: {reason}.", peer=self.peer, reason=reason, path=path
                )
            for path, reason in result["failed"]:
                self.log.error(
                    "Could not put {path} from {peer} in place: {reason}; it is retried next cycle.",
                    peer=self.peer, reason=reason, path=path,
                )
            self.log.info(
                "Received from {peer}: {written} files written, {deleted} deleted.",
                peer=self.peer,
                written=result["written"],
                deleted=result["deleted"],
            )
            self._finish(result, None)
            return json.dumps(result)

        def failed(failure: Any) -> Any:
            self._finish(None, failure.getErrorMessage())
            return failure

        return self.runInThread(self._commit).addCallbacks(committed, failed)

    def abort(self, reason: str) -> None:
        self.runInThread(self.stager.abort).addErrback(
            lambda f: self.log.failure("Could not remove the temporary files of an abandoned transfer", f)
        )
        self._finish(None, reason)

    def _finish(self, result: dict[str, Any] | None, error: str | None) -> None:
        if not self._done:
            self._done = True
            self.finished(result, error)
