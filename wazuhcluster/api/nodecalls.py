"""
The distributed API: an API request that names another node runs there.

The node that takes the HTTP request asks the named node over the cluster
link with L{NodeCall}: a worker asks the master, which answers for itself or
asks the named worker in turn; the master asks the worker directly.  The
answer (or the L{ApiError} the named node raised) comes back the same way,
so the client gets that node's own answer.

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
from twisted.protocols import amp

from ..protocol.stream import CHUNK_SIZE, SinkFactory, chunksOf
from .envelope import ApiError
from .localnode import MAX_FILE_SIZE, LocalNode

#: The largest body or answer sent inside the call itself.
INLINE_LIMIT = 32 * 1024

#: The largest blob one node takes (a file, JSON-encoded, and some room).
MAX_BLOB_BYTES = 2 * MAX_FILE_SIZE + 1024 * 1024

#: How long an unclaimed blob is kept.
BLOB_LIFETIME = 300.0

#: Most blobs waiting at once; the oldest goes first.
MAX_BLOBS = 64


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
    """Blobs received by stream, waiting for the call that names them."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._blobs: dict[str, tuple[bytes, IDelayedCall]] = {}

    def put(self, blobID: str, data: bytes) -> None:
        if len(self._blobs) >= MAX_BLOBS:
            self.take(next(iter(self._blobs)))
        expiry = self.clock.callLater(BLOB_LIFETIME, self._blobs.pop, blobID, None)
        self._blobs[blobID] = (data, expiry)

    def take(self, blobID: str) -> bytes:
        entry = self._blobs.pop(blobID, None)
        if entry is None:
            raise ApiError(3, "the body of the request did not arrive")
        data, expiry = entry
        if expiry.active():
            expiry.cancel()
        return data


class _BlobSink:
    def __init__(self, store: BlobStore, blobID: str) -> None:
        self.store = store
        self.blobID = blobID
        self.parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> str:
        self.store.put(self.blobID, b"".join(self.parts))
        return "{}"

    def abort(self, reason: str) -> None:
        self.parts.clear()


class NodeCalls:
    """Runs API operations on the node they name, here or across the cluster."""

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

    @property
    def nodeName(self) -> str:
        return self.local.nodeName

    def sinksFor(self, connection: Any) -> dict[str, tuple[SinkFactory, int]]:
        return {"api-blob": (lambda info: _BlobSink(self.blobs, info[:64]), MAX_BLOB_BYTES)}

    async def call(self, node: str, operation: str, arguments: dict[str, Any], body: bytes = b"") -> Any:
        """The result of C{operation} on C{node}; raises L{ApiError}."""
        if node == self.nodeName:
            return await self.local.run(operation, arguments, body)
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
        data = self.blobs.take(answer["result_blob"]) if answer["result_blob"] else answer["result"]
        return json.loads(data)

    async def answer(
        self, connection: Any, node: str, operation: str, arguments: str, body: bytes, bodyBlob: str
    ) -> dict[str, Any]:
        """Answer a L{NodeCall} that arrived on C{connection}."""
        try:
            if bodyBlob:
                body = self.blobs.take(bodyBlob)
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
