"""
Streams: how anything bigger than one message crosses a cluster link.

A stream is opened with a kind (what it carries), sent as numbered chunks
of at most L{CHUNK_SIZE} bytes, and closed with the SHA-256 of everything
sent.  Each chunk is an AMP command whose answer is the receiver's
acknowledgement; the sender keeps at most a window of chunks unanswered, so
a slow receiver slows the sender down and memory stays bounded on both
sides, whatever the size.  Keep-alives and other commands interleave with
the chunks, since every chunk is a message of its own.

The receiving side hands chunks, in order and one at a time, to a L{Sink}
made for the stream's kind; the sink may be slow (writing to disk in a
thread) without ever seeing two chunks at once.  A stream that receives
nothing for C{timeout_receiving_file} seconds is abandoned on the receiving
side, and its sender, whose chunks then fail or time out, abandons it too.
"""

from __future__ import annotations

import hashlib
from typing import Any, Awaitable, Callable, Iterator, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredLock, DeferredSemaphore
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

#: Bytes of payload in one chunk: far below one AMP value with its sealing.
CHUNK_SIZE = 48 * 1024

#: Chunks a sender keeps unanswered.
WINDOW = 8

#: Open streams one connection may hold at once, per direction.
MAX_OPEN_STREAMS = 4


class StreamRefused(Exception):
    """The receiver will not take this stream; the message says why."""


class StreamFailed(Exception):
    """The stream broke on the receiving side; the message says why."""


class StreamOpen(amp.Command):
    """Open stream C{stream_id} of kind C{kind}; C{info} is kind-specific text."""

    arguments = [(b"stream_id", amp.Integer()), (b"kind", amp.Unicode()), (b"info", amp.Unicode())]
    response: list = []
    errors = {StreamRefused: b"STREAM_REFUSED"}


class StreamChunk(amp.Command):
    """Chunk C{seq} (from 0) of stream C{stream_id}."""

    arguments = [(b"stream_id", amp.Integer()), (b"seq", amp.Integer()), (b"data", amp.String())]
    response: list = []
    errors = {StreamFailed: b"STREAM_FAILED"}


class StreamClose(amp.Command):
    """
    The end of stream C{stream_id}: how many chunks and bytes were sent and
    their SHA-256; answered with the sink's result, as text.
    """

    arguments = [
        (b"stream_id", amp.Integer()),
        (b"chunks", amp.Integer()),
        (b"size", amp.Integer()),
        (b"sha256", amp.String()),
    ]
    response = [(b"result", amp.Unicode())]
    errors = {StreamFailed: b"STREAM_FAILED"}


class StreamAbort(amp.Command):
    """The sender gives stream C{stream_id} up; the receiver drops what it has."""

    arguments = [(b"stream_id", amp.Integer()), (b"reason", amp.Unicode())]
    response: list = []
    requiresAnswer = False


class Sink(Protocol):
    """Where the chunks of one received stream go."""

    def feed(self, data: bytes) -> Awaitable[None] | None:
        """Take the next chunk (may return a Deferred; the next waits for it)."""

    def close(self) -> Awaitable[str] | str:
        """All chunks arrived and checked out: finish, and return the result text."""

    def abort(self, reason: str) -> None:
        """The stream was abandoned: drop everything received."""


#: Makes the sink of a stream of one kind from its C{info}; raises
#: L{StreamRefused} to refuse the stream.
SinkFactory = Callable[[str], Sink]


class _Incoming:
    """One stream being received."""

    def __init__(self, streamID: int, kind: str, sink: Sink, maxSize: int) -> None:
        self.streamID = streamID
        self.kind = kind
        self.sink = sink
        self.maxSize = maxSize
        self.nextSeq = 0
        self.size = 0
        self.digest = hashlib.sha256()
        self.lock = DeferredLock()
        self.idle: IDelayedCall | None = None
        self.failed: str | None = None


class StreamEndpoint:
    """
    The streams of one connection, both ways: an AMP protocol owns one and
    routes the four stream commands to it (L{StreamResponders}).
    """

    log = Logger()

    def __init__(
        self,
        protocol: amp.AMP,
        clock: IReactorTime,
        sinks: dict[str, tuple[SinkFactory, int]],
        idleTimeout: float,
    ) -> None:
        """
        @param sinks: for each kind this side accepts, its sink factory and
            the most bytes one stream of that kind may carry.
        """
        self.protocol = protocol
        self.clock = clock
        self.sinks = sinks
        self.idleTimeout = idleTimeout
        self._incoming: dict[int, _Incoming] = {}
        self._nextID = 1
        self._sending = DeferredSemaphore(MAX_OPEN_STREAMS)

    @property
    def logTag(self) -> str:
        return getattr(self.protocol, "logTag", "[Cluster]")

    # Receiving.

    def opened(self, stream_id: int, kind: str, info: str) -> dict[str, Any]:
        refusal = None
        if not getattr(self.protocol, "joined", True):
            refusal = "streams are taken only once the handshake is complete"
        elif stream_id in self._incoming:
            refusal = f"stream {stream_id} is already open"
        elif len(self._incoming) >= MAX_OPEN_STREAMS:
            refusal = f"too many open streams (at most {MAX_OPEN_STREAMS})"
        elif kind not in self.sinks:
            refusal = f"this node takes no stream of kind {kind[:64]!r}"
        if refusal is not None:
            self.log.warn(
                "Refused a stream from {peer}: {why}.",
                peer=self.protocol.peerName() if hasattr(self.protocol, "peerName") else "peer", why=refusal,
            )
            raise StreamRefused(refusal)
        factory, maxSize = self.sinks[kind]
        incoming = _Incoming(stream_id, kind, factory(info), maxSize)
        self._incoming[stream_id] = incoming
        self._armIdle(incoming)
        return {}

    def _armIdle(self, incoming: _Incoming) -> None:
        if incoming.idle is not None and incoming.idle.active():
            incoming.idle.cancel()
        incoming.idle = self.clock.callLater(self.idleTimeout, self._stalled, incoming)

    def _stalled(self, incoming: _Incoming) -> None:
        incoming.idle = None
        self._drop(
            incoming,
            f"nothing received for {self.idleTimeout} seconds (timeout_receiving_file)",
        )

    def _drop(self, incoming: _Incoming, reason: str) -> None:
        if self._incoming.get(incoming.streamID) is not incoming:
            return
        del self._incoming[incoming.streamID]
        incoming.failed = reason
        if incoming.idle is not None and incoming.idle.active():
            incoming.idle.cancel()
        self.log.warn(
            "Abandoned incoming {kind} stream {id} from {peer}: {reason}.",
            kind=incoming.kind,
            id=incoming.streamID,
            peer=self.protocol.peerName() if hasattr(self.protocol, "peerName") else "peer",
            reason=reason,
        )
        try:
            incoming.sink.abort(reason)
        except Exception:
            self.log.failure("Could not clean up stream {id}", id=incoming.streamID)

    def _get(self, stream_id: int) -> _Incoming:
        incoming = self._incoming.get(stream_id)
        if incoming is None:
            raise StreamFailed(f"stream {stream_id} is not open (abandoned, or never opened)")
        return incoming

    def chunk(self, stream_id: int, seq: int, data: bytes) -> Deferred:
        incoming = self._get(stream_id)
        if seq != incoming.nextSeq:
            self._drop(incoming, f"chunk {seq} arrived where {incoming.nextSeq} was expected")
            raise StreamFailed("chunks out of order")
        incoming.nextSeq += 1
        incoming.size += len(data)
        if incoming.size > incoming.maxSize:
            self._drop(incoming, f"more than {incoming.maxSize} bytes")
            raise StreamFailed("stream too large")
        incoming.digest.update(data)
        self._armIdle(incoming)

        async def feed() -> dict[str, Any]:
            if incoming.failed is not None:
                raise StreamFailed(incoming.failed)
            try:
                await _maybe(incoming.sink.feed(data))
            except Exception as e:
                self._drop(incoming, _describe(e))
                raise StreamFailed(_describe(e)) from None
            if incoming.failed is None:
                # A sink slow with many queued chunks is progress, not a stall.
                self._armIdle(incoming)
            return {}

        return incoming.lock.run(lambda: Deferred.fromCoroutine(feed()))

    def closed(self, stream_id: int, chunks: int, size: int, sha256: bytes) -> Deferred:
        incoming = self._get(stream_id)

        async def close() -> dict[str, Any]:
            if incoming.failed is not None:
                raise StreamFailed(incoming.failed)
            if (chunks, size) != (incoming.nextSeq, incoming.size):
                reason = f"sender sent {chunks} chunks, {size} bytes; {incoming.nextSeq}, {incoming.size} arrived"
            elif sha256 != incoming.digest.digest():
                reason = "SHA-256 of the stream does not match"
            else:
                reason = None
            if reason is not None:
                self._drop(incoming, reason)
                raise StreamFailed(reason)
            if incoming.idle is not None and incoming.idle.active():
                incoming.idle.cancel()
            try:
                result = await _maybe(incoming.sink.close())
            except Exception as e:
                self._drop(incoming, _describe(e))
                raise StreamFailed(_describe(e)) from None
            self._incoming.pop(stream_id, None)
            return {"result": result}

        return incoming.lock.run(lambda: Deferred.fromCoroutine(close()))

    def aborted(self, stream_id: int, reason: str) -> dict[str, Any]:
        incoming = self._incoming.get(stream_id)
        if incoming is not None:
            self._drop(incoming, f"the sender gave it up ({reason[:200]})")
        return {}

    def connectionLost(self) -> None:
        """The link is gone: abandon every incoming stream."""
        for incoming in list(self._incoming.values()):
            self._drop(incoming, "the connection was lost")

    # Sending.

    async def send(
        self,
        kind: str,
        info: str,
        chunks: Callable[[], Awaitable[bytes | None]],
        timeout: float,
        window: int = WINDOW,
    ) -> str:
        """
        Send a stream whose chunks come from C{chunks()} (each call gives
        the next, or None at the end; it may run in a thread), and return the
        receiver's result.  Raises what broke it; the receiver is told.
        """
        async with _Held(self._sending):
            streamID = self._nextID
            self._nextID += 1
            await self._call(StreamOpen, timeout, stream_id=streamID, kind=kind, info=info)
            digest, size, seq = hashlib.sha256(), 0, 0
            inFlight: list[Deferred] = []
            # Chunks answer in order, each once the receiver has taken it
            # (written it, for a bundle): the deadline is on progress, not
            # on each chunk, so a receiver that is slow but moving (a worker
            # writing 50,000 small files on a busy machine) is not given up.
            progress = _Progress(self.clock, timeout)
            try:
                while True:
                    data = await _maybe(chunks())
                    if data is None:
                        break
                    for start in range(0, max(len(data), 1), CHUNK_SIZE):
                        piece = data[start : start + CHUNK_SIZE]
                        if not piece:
                            continue
                        digest.update(piece)
                        size += len(piece)
                        # The outcome is taken at once: AMP drops the whole
                        # connection when an error answer finds no errback,
                        # and a refused chunk must fail this stream only.
                        inFlight.append(
                            progress.watch(self.protocol.callRemote(StreamChunk, stream_id=streamID, seq=seq, data=piece))
                            .addCallbacks(lambda r: (True, r), lambda f: (False, f))
                        )
                        seq += 1
                        if len(inFlight) >= window:
                            _settled(await inFlight.pop(0))
                for pending in inFlight:
                    _settled(await pending)
                inFlight = []
                answer = await self._call(
                    StreamClose, timeout, stream_id=streamID, chunks=seq, size=size, sha256=digest.digest()
                )
            except BaseException as e:
                self._abortRemote(streamID, _describe(e))
                raise
            finally:
                progress.stop()
            return answer["result"]

    def _call(self, command: type[amp.Command], timeout: float, **arguments: Any) -> Deferred:
        d = self.protocol.callRemote(command, **arguments)
        d.addTimeout(timeout, self.clock)

        def inWords(failure: Failure) -> Failure:
            failure.trap(TimeoutError)
            return Failure(TimeoutError(f"the peer did not answer {command.__name__} within {timeout:g} seconds"))

        return d.addErrback(inWords)

    def _abortRemote(self, streamID: int, reason: str) -> None:
        try:
            self.protocol.callRemote(StreamAbort, stream_id=streamID, reason=reason[:500])
        except Exception:
            pass  # the connection is gone: the receiver drops the stream by itself


class _Progress:
    """
    Fails every chunk in flight once none has been answered for C{timeout}
    seconds: the receiver stalled.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.pending: list[Deferred] = []
        self.timer: IDelayedCall | None = None
        self.stalled = False

    def watch(self, answer: Deferred) -> Deferred:
        """Watch C{answer}, the answer to a chunk just sent."""
        self.pending.append(answer)
        if self.timer is None:
            self.timer = self.clock.callLater(self.timeout, self._stall)
        return answer.addBoth(self._answered, answer)

    def _answered(self, result: Any, answer: Deferred) -> Any:
        self.pending.remove(answer)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.clock.callLater(self.timeout, self._stall) if self.pending else None
        if self.stalled and isinstance(result, Failure) and result.check(CancelledError):
            return Failure(TimeoutError(f"the receiver took no chunk for {self.timeout:g} seconds"))
        return result

    def _stall(self) -> None:
        self.timer = None
        self.stalled = True
        for answer in list(self.pending):
            answer.cancel()

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class _Held:
    """C{async with} for a DeferredSemaphore."""

    def __init__(self, semaphore: DeferredSemaphore) -> None:
        self.semaphore = semaphore

    async def __aenter__(self) -> None:
        await self.semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.semaphore.release()


async def _maybe(value: Any) -> Any:
    if isinstance(value, Deferred) or hasattr(value, "__await__"):
        return await value
    return value


def _settled(outcome: tuple[bool, Any]) -> Any:
    """The value of a chunk's answer taken as (succeeded, value), or its failure raised."""
    succeeded, value = outcome
    if not succeeded:
        value.raiseException()
    return value


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def chunksOf(pieces: Iterator[bytes]) -> Callable[[], bytes | None]:
    """A chunk source over an in-memory iterator (for small streams)."""

    def nextChunk() -> bytes | None:
        return next(pieces, None)

    return nextChunk


class StreamResponders(amp.CommandLocator):
    """
    Mixin for an AMP protocol with a L{StreamEndpoint} in C{self.streams}:
    answers the stream commands.  (A C{CommandLocator} itself, so that AMP
    registers these responders with this class.)
    """

    streams: StreamEndpoint

    @StreamOpen.responder
    def _streamOpen(self, stream_id: int, kind: str, info: str) -> dict[str, Any]:
        return self.streams.opened(stream_id, kind, info)

    @StreamChunk.responder
    def _streamChunk(self, stream_id: int, seq: int, data: bytes) -> Deferred:
        return self.streams.chunk(stream_id, seq, data)

    @StreamClose.responder
    def _streamClose(self, stream_id: int, chunks: int, size: int, sha256: bytes) -> Deferred:
        return self.streams.closed(stream_id, chunks, size, sha256)

    @StreamAbort.responder
    def _streamAbort(self, stream_id: int, reason: str) -> dict[str, Any]:
        return self.streams.aborted(stream_id, reason)
