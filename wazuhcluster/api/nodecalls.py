"""
The distributed API: an API request that names another node runs there.

The node that takes the HTTP request asks the named node over the cluster
link with L{NodeCall}: a worker asks the master, which answers for itself or
asks the named worker in turn; the master asks the worker directly.  The
answer (or the L{ApiError} the named node raised) comes back the same way,
so the client gets that node's own answer.

Each operation declares where it may travel (L{DIRECTIONS}): reads go both
ways, changes (files, restarts) only from the master to a worker, so that a
worker holding the cluster key cannot make the master write or restart;
the master refuses those with error L{WRONG_DIRECTION}, and every call it
answers is logged with the name of the node that asked.

A request body or an answer larger than L{INLINE_LIMIT} does not fit in one
sealed message: it crosses first as an C{api-blob} stream (chunked and
acknowledged like every large transfer), and the call names it.  Since
a stream is acknowledged whole before the call is sent, the blob is always
there when the call needs it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols import amp

from ..protocol.stream import CHUNK_SIZE, MAX_OPEN_STREAMS, SinkFactory, chunksOf
from .envelope import ApiError
from .guard import ThrottledLog
from .localnode import MAX_FILE_SIZE, LocalNode

#: The largest body or answer sent inside the call itself.
INLINE_LIMIT = 32 * 1024

#: The largest blob one node takes (a file, JSON-encoded, and some room).
MAX_BLOB_BYTES = 2 * MAX_FILE_SIZE + 1024 * 1024

#: How long an unclaimed blob is kept (a blob is sent just before the call
#: that names it, so it is claimed within moments).
BLOB_LIFETIME = 60.0

#: Per connection: blobs kept waiting for their call, at most.
MAX_BLOBS = 8

#: Per connection: api-blob streams being received at once, at most (as
#: many as a sender opens at once; more are refused, not queued).
MAX_BLOB_STREAMS = MAX_OPEN_STREAMS

#: Per connection: bytes of blobs kept or being received, at most.
MAX_UNCLAIMED_BYTES = 2 * MAX_BLOB_BYTES

#: Where each node operation may travel.  C{DOWN}: only from the master to a
#: worker (it changes the node it runs on: files, restarts); C{BOTH}: also
#: from a worker to the master (it only reads).  The master refuses from a
#: worker anything not C{BOTH}; a node refuses an operation not listed.
DOWN, BOTH = "master to worker", "both ways"
DIRECTIONS = {
    **dict.fromkeys(
        ("info", "status", "stats", "files.get", "configuration", "stats.hourly", "stats.weekly",
         "stats.cluster", "logs", "logs.summary"),
        BOTH,
    ),
    **dict.fromkeys(("files.put", "files.delete", "restart"), DOWN),
}

#: The error of a node call refused for the way it travels.
WRONG_DIRECTION = 3030


def refusedDirection(operation: str) -> ApiError:
    """The error for C{operation} asked of the master by a worker, or not a node operation at all."""
    error = ApiError(WRONG_DIRECTION, status=403)
    if operation in DIRECTIONS:
        error.message = (
            f"Node call refused: {operation} changes the node it runs on, so only the master asks it "
            f"of a node; use the master's API"
        )
    else:
        error.message = f"Node call refused: {operation[:64]!r} is not a node operation"
    return error


class NodeCallFailed(Exception):
    """The named node refused the call; the description is the L{ApiError} as JSON."""


class NodeCall(amp.Command):
    """Run API operation C{operation} on node C{node}; C{arguments} is JSON."""

    arguments = [
        (b"node", amp.Unicode()),
        (b"operation", amp.Unicode()),
        (b"arguments", amp.Unicode()),
        (b"body", amp.String()),
        (b"body_blob", amp.Unicode()),
    ]
    response = [(b"result", amp.String()), (b"result_blob", amp.Unicode())]
    errors = {NodeCallFailed: b"NODE_CALL_FAILED"}


class BlobStore:
    """
    Blobs received by stream, waiting for the call that names them.  Each
    connection has its own share (L{MAX_BLOB_STREAMS} streams,
    L{MAX_BLOBS} blobs, L{MAX_UNCLAIMED_BYTES} bytes, kept L{BLOB_LIFETIME}
    seconds), and a call can claim only the blobs of its own connection.
    """

    log = Logger()
    logTag = "[API]"

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._blobs: dict[str, tuple[bytes, IDelayedCall, Any]] = {}
        #: Per connection: [bytes kept or arriving, blobs kept, streams open].
        self._shares: dict[Any, list[int]] = {}

    def _share(self, owner: Any) -> list[int]:
        return self._shares.setdefault(owner, [0, 0, 0])

    def _release(self, owner: Any, size: int, blobs: int = 0, streams: int = 0) -> None:
        share = self._share(owner)
        share[0] -= size
        share[1] -= blobs
        share[2] -= streams
        if share == [0, 0, 0]:
            del self._shares[owner]

    def held(self, owner: Any) -> int:
        """Bytes of blobs that C{owner}'s connection has kept or is sending."""
        return self._shares.get(owner, [0, 0, 0])[0]

    def opening(self, owner: Any) -> str | None:
        """Count a new stream of C{owner}; why it is refused, or None."""
        share = self._share(owner)
        if share[2] >= MAX_BLOB_STREAMS:
            if share == [0, 0, 0]:
                del self._shares[owner]
            return f"too many api-blob streams at once (at most {MAX_BLOB_STREAMS} per connection)"
        share[2] += 1
        return None

    def reserve(self, owner: Any, size: int) -> None:
        """Count C{size} more bytes arriving for C{owner}; C{ValueError} over its share."""
        share = self._share(owner)
        if share[0] + size > MAX_UNCLAIMED_BYTES:
            raise ValueError(
                f"over {MAX_UNCLAIMED_BYTES} bytes of API blobs unclaimed or arriving on this connection"
            )
        share[0] += size

    def put(self, owner: Any, blobID: str, data: bytes) -> None:
        """Keep a whole blob (its bytes already reserved) for its call."""
        share = self._share(owner)
        if share[1] >= MAX_BLOBS or blobID in self._blobs:
            self._release(owner, len(data), streams=1)
            raise ValueError(f"too many API blobs unclaimed on this connection (at most {MAX_BLOBS})")
        share[1] += 1
        self._release(owner, 0, streams=1)
        expiry = self.clock.callLater(BLOB_LIFETIME, self._expired, blobID)
        self._blobs[blobID] = (data, expiry, owner)

    def _expired(self, blobID: str) -> None:
        data, _, owner = self._blobs.pop(blobID)
        self._release(owner, len(data), blobs=1)
        self.log.warn(
            "Dropped an API blob of {size} bytes from {peer}: no call claimed it within {seconds:.0f} s.",
            size=len(data), peer=peerName(getattr(owner, "protocol", owner)), seconds=BLOB_LIFETIME,
        )

    def take(self, blobID: str, connection: Any = None) -> bytes:
        """The blob C{blobID}, if it came over C{connection} (any, if None)."""
        owner = _owner(connection) if connection is not None else None
        entry = self._blobs.get(blobID)
        if entry is None or (owner is not None and entry[2] is not owner):
            raise ApiError(3, "the body of the request did not arrive")
        del self._blobs[blobID]
        data, expiry, owner = entry
        if expiry.active():
            expiry.cancel()
        self._release(owner, len(data), blobs=1)
        return data


def _owner(connection: Any) -> Any:
    """
    What a connection's blobs are counted by: its stream endpoint, the same
    object whether the connection is reached directly or through the proxy
    of a reconnecting client service.
    """
    return getattr(connection, "streams", connection)


def peerName(connection: Any) -> str:
    """The node name of the other end of a cluster connection."""
    return str(getattr(connection, "masterName", None) or getattr(connection, "nodeName", None) or "an unnamed peer")


class _BlobSink:
    def __init__(self, store: BlobStore, owner: Any, blobID: str) -> None:
        self.store = store
        self.owner = owner
        self.blobID = blobID
        self.parts: list[bytes] = []
        self.size = 0
        self.refused = store.opening(owner)

    def feed(self, data: bytes) -> None:
        if self.refused is not None:
            raise ValueError(self.refused)
        self.store.reserve(self.owner, len(data))
        self.size += len(data)
        self.parts.append(data)

    def close(self) -> str:
        if self.refused is not None:
            raise ValueError(self.refused)
        data = b"".join(self.parts)
        self.parts.clear()
        self.refused = "closed"
        self.store.put(self.owner, self.blobID, data)
        return "{}"

    def abort(self, reason: str) -> None:
        self.parts.clear()
        if self.refused is None:
            self.refused = "aborted"
            self.store._release(self.owner, self.size, streams=1)


class NodeCalls:
    """Runs API operations on the node they name, here or across the cluster."""

    log = Logger()
    logTag = "[API]"

    def __init__(
        self,
        local: LocalNode,
        clock: IReactorTime,
        routeTo: Callable[[str], Any],
        isMaster: bool,
        timeout: float = 60.0,
    ) -> None:
        """
        @param routeTo: the connection that leads to a node (on the master,
            that worker's; on a worker, the master's); raises L{ApiError}
            when there is none.
        """
        self.local = local
        self.clock = clock
        self.routeTo = routeTo
        self.isMaster = isMaster
        self.timeout = timeout
        self.blobs = BlobStore(clock)
        self.refusals = ThrottledLog(clock, prefix="")

    @property
    def nodeName(self) -> str:
        return self.local.nodeName

    def sinksFor(self, connection: Any) -> dict[str, tuple[SinkFactory, int]]:
        return {"api-blob": (lambda info: _BlobSink(self.blobs, _owner(connection), info[:64]), MAX_BLOB_BYTES)}

    async def call(self, node: str, operation: str, arguments: dict[str, Any], body: bytes = b"") -> Any:
        """The result of C{operation} on C{node}; raises L{ApiError}."""
        if node == self.nodeName:
            return await self.local.run(operation, arguments, body)
        if not self.isMaster and DIRECTIONS.get(operation) != BOTH:
            raise refusedDirection(operation)  # the master would refuse it
        connection = self.routeTo(node)
        return await self._remote(connection, node, operation, arguments, body)

    async def _send(self, connection: Any, data: bytes) -> str:
        """Send C{data} as a blob if it is too large for a message; its ID, or ""."""
        if len(data) <= INLINE_LIMIT:
            return ""
        blobID = secrets.token_hex(16)
        pieces = iter([data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)])
        await connection.streams.send("api-blob", blobID, chunksOf(pieces), timeout=self.timeout)
        return blobID

    async def _remote(self, connection: Any, node: str, operation: str, arguments: dict[str, Any], body: bytes) -> Any:
        try:
            blobID = await self._send(connection, body)
            d = connection.callRemote(
                NodeCall, node=node, operation=operation, arguments=json.dumps(arguments),
                body=b"" if blobID else body, body_blob=blobID,
            )
            d.addTimeout(self.timeout, self.clock)
            answer = await d
        except NodeCallFailed as e:
            raise _errorFrom(str(e)) from None
        except ApiError:
            raise
        except Exception as e:
            raise ApiError(3021, f"node {node}: {e or type(e).__name__}") from None
        data = self.blobs.take(answer["result_blob"], connection) if answer["result_blob"] else answer["result"]
        return json.loads(data)

    async def answer(
        self, connection: Any, node: str, operation: str, arguments: str, body: bytes, bodyBlob: str
    ) -> dict[str, Any]:
        """Answer a L{NodeCall} that arrived on C{connection}."""
        peer = peerName(connection)
        try:
            if bodyBlob:
                body = self.blobs.take(bodyBlob, connection)
            direction = DIRECTIONS.get(operation)
            if direction is None or (self.isMaster and direction != BOTH):
                self.refusals.warn(
                    "direction", peer,
                    f"Refused node call {operation[:64]!r} on {node[:64]} from {peer}: "
                    f"it may travel {direction or 'nowhere'}.",
                )
                raise refusedDirection(operation)
            self.log.info("Node call {operation} on {node} from {peer}.", operation=operation, node=node[:64], peer=peer)
            if node != self.nodeName and not self.isMaster:
                raise ApiError(3022, node)
            try:
                parsed = json.loads(arguments)
            except ValueError:
                raise ApiError(3, "the call's arguments are not JSON") from None
            if not isinstance(parsed, dict):
                raise ApiError(3, "the call's arguments are not a JSON object")
            data = await self.call(node, operation, parsed, body)
        except ApiError as e:
            raise NodeCallFailed(json.dumps({"code": e.code, "message": e.message, "status": e.status})) from None
        payload = json.dumps(data).encode("utf-8")
        blobID = await self._send(connection, payload)
        return {"result": b"" if blobID else payload, "result_blob": blobID}


class NodeCallResponders(amp.CommandLocator):
    """Mixin: answers L{NodeCall} with the factory's L{NodeCalls}, if it has one."""

    @NodeCall.responder
    def _nodeCall(self, node: str, operation: str, arguments: str, body: bytes, body_blob: str) -> Deferred:
        calls = getattr(getattr(self, "factory", None), "nodeCalls", None)
        if calls is None or not getattr(self, "joined", False):
            raise NodeCallFailed(json.dumps({"code": 3022, "message": "this node takes no API calls", "status": 200}))
        return Deferred.fromCoroutine(calls.answer(self, node, operation, arguments, body, body_blob))


def _errorFrom(description: str) -> ApiError:
    try:
        detail = json.loads(description)
        error = ApiError(int(detail["code"]), status=int(detail["status"]) if "status" in detail else None)
        error.message = str(detail["message"])
        return error
    except (ValueError, KeyError, TypeError):
        return ApiError(3021, description[:200])
