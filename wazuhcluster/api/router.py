"""
Routing API requests to their handlers, and turning what handlers return
(or raise) into the Wazuh envelope.

The routes are one table of C{(method, pattern)}: a pattern is a path whose
C{:name} segments capture that segment.  The table is also what the OpenAPI
document in C{docs/} is checked against.  Fifteen routes do not need a
routing framework: this is a dozen lines and keeps twisted.web's own
request model.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Sequence
from urllib.parse import parse_qsl, unquote

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .envelope import ApiError, render, success

#: Largest request body taken.
MAX_BODY = 17 * 1024 * 1024


@frozen
class Call:
    """One request, as a handler sees it."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; error 605 if it is not one."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise ApiError(605) from None
        if not isinstance(value, dict):
            raise ApiError(605, "the body must be a JSON object")
        return value


Handler = Callable[[Call], Awaitable[Any]]


@frozen
class Route:
    method: str
    pattern: str
    handler: Handler

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        parts = self.pattern.strip("/").split("/") if self.pattern != "/" else []
        if len(parts) != len(segments):
            return None
        params = {}
        for part, segment in zip(parts, segments):
            if part.startswith(":"):
                if not segment:
                    return None
                params[part[1:]] = segment
            elif part != segment:
                return None
        return params


class ApiResource(Resource):
    """The whole API: every path comes here and is routed from the table."""

    isLeaf = True
    log = Logger()
    logTag = "[API]"

    def __init__(self, routes: Sequence[Route]) -> None:
        super().__init__()
        self.routes = list(routes)

    def render(self, request: Request) -> Any:
        path = request.path.decode("utf-8", "replace")
        # Split first, then decode each segment: %2F in a name stays in it.
        segments = [unquote(s) for s in path.strip("/").split("/") if s] if path.strip("/") else []
        query = {
            k: v for k, v in parse_qsl(
                request.uri.decode("utf-8", "replace").partition("?")[2], keep_blank_values=True
            )
        }
        pretty = "pretty" in query
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            method = "GET"  # twisted.web sends the headers only
        found = [(r, p) for r in self.routes if (p := r.match(segments)) is not None]
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        if not found:
            return self._fail(request, ApiError(603, path, status=404), pretty)
        chosen = next(((r, p) for r, p in found if r.method == method), None)
        if chosen is None:
            allowed = ", ".join(sorted({r.method for r, _ in found}))
            request.setHeader(b"allow", allowed.encode())
            return self._fail(request, ApiError(604, f"{method} {path}; allowed: {allowed}", status=405), pretty)
        route, params = chosen
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_BODY:
            return self._fail(request, ApiError(600, f"the body is larger than {MAX_BODY} bytes", status=413), pretty)
        call = Call(method, path, params, query, body)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        async def handle() -> None:
            try:
                data = await route.handler(call)
            except ApiError as e:
                status, answer = e.status, e.body()
            except Exception:
                self.log.failure("The API could not answer {method} {path}", method=method, path=path)
                status, answer = 500, ApiError(1000, status=500).body()
            else:
                status, answer = 200, success(data)
            if not gone:  # the client may have gone meanwhile
                request.setResponseCode(status)
                request.write(render(answer, pretty))
                request.finish()

        Deferred.fromCoroutine(handle())
        return NOT_DONE_YET

    def _fail(self, request: Request, error: ApiError, pretty: bool) -> bytes:
        request.setResponseCode(error.status)
        return render(error.body(), pretty)
