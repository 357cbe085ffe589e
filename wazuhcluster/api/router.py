"""
Routing API requests to their handlers, checking their parameters as the
Wazuh 3.x API does, and turning what handlers return (or raise) into the
Wazuh envelope.

The routes are one table (L{wazuhcluster.api.endpoints.routes}): method,
pattern, handler, where it runs, and the query parameters it takes with
their 3.x types.  A pattern is a path whose C{:name} segments capture that
segment.  As in 3.x (Express), the first route of the table that matches a
path wins, so C{/cluster/nodes/info} is the node named C{info}, never the
C{info} of a node named C{nodes}.  Everything about parameters happens here,
before a handler runs: an unknown parameter is 604, a value of the wrong
type its type's code, and a list route's C{offset}, C{limit}, C{sort},
C{search}, C{select} and C{q} are parsed into the call's L{ListQuery}.
The table is also what the OpenAPI document in C{docs/} is checked against.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qsl, unquote

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .envelope import ApiError, render, success
from .filters import LIST_PARAMETERS, ListQuery, checkParameter, checkParameters

#: Largest request body taken.
MAX_BODY = 17 * 1024 * 1024

#: Where a route runs: on the node that took the request, on the master
#: (a worker asks it over its cluster link), or on the node the path names.
HERE, MASTER, NAMED_NODE = "this node", "master", ":node_id"

#: Parameters every request may carry, taken by the router.
ENVELOPE_PARAMETERS = {"pretty": "text", "wait_for_complete": "boolean"}

#: The 3.x type of each path parameter.
PATH_PARAMETERS = {"node_id": "names", "node_name": "names", "agent_id": "numbers"}


@frozen
class Call:
    """One request, as a handler sees it."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: bytes
    contentType: str = ""
    listQuery: ListQuery = field(factory=ListQuery)

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; error 614 if it is not one."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise ApiError(614, "The body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiError(614, "The body must be a JSON object")
        return value


Handler = Callable[[Call], Awaitable[Any]]


@frozen
class Route:
    """
    One row of the route table.  C{parameters} are the query parameters the
    route takes (name -> 3.x type); a C{listed} route also takes the list
    parameters.
    """

    method: str
    pattern: str
    handler: Handler
    where: str = HERE
    parameters: Mapping[str, str] = field(factory=dict)
    listed: bool = False

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

    @property
    def allParameters(self) -> dict[str, str]:
        """Every query parameter of the route, with its type."""
        return {**(LIST_PARAMETERS if self.listed else {}), **self.parameters}

    def check(self, params: Mapping[str, str], query: Mapping[str, str]) -> ListQuery:
        """Check the request's parameters; its list parameters, parsed."""
        for name, value in params.items():
            checkParameter(name, value, PATH_PARAMETERS.get(name, "names"))
        checkParameters(query, self.allParameters)
        return ListQuery.fromQuery(query) if self.listed else ListQuery()


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
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        found = [(r, p) for r in self.routes if (p := r.match(segments)) is not None]
        chosen = next(((r, p) for r, p in found if r.method == method), None)
        if chosen is None:
            # 3.x answers 603 for a path without this method too; Allow says which it has.
            allowed = ", ".join(sorted({r.method for r, _ in found}))
            if allowed:
                request.setHeader(b"allow", allowed.encode())
            detail = f"{method} {path}" + (f" (this URL takes {allowed})" if allowed else "")
            return self._fail(request, ApiError(603, detail), pretty)
        route, params = chosen
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_BODY:
            return self._fail(request, ApiError(614, f"The body is larger than {MAX_BODY} bytes", status=413), pretty)
        contentType = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()
        try:
            for name, kind in ENVELOPE_PARAMETERS.items():
                if name in query:
                    checkParameter(name, query.pop(name), kind)
            listQuery = route.check(params, query)
        except ApiError as e:
            return self._fail(request, e, pretty)
        call = Call(method, path, params, query, body, contentType, listQuery)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        async def handle() -> None:
            try:
                data = await route.handler(call)
            except ApiError as e:
                status, answer = e.status, e.body()
            except Exception:
                self.log.failure("The API could not answer {method} {path}", method=method, path=path)
                error = ApiError(3, "see the node's cluster.log")
                status, answer = error.status, error.body()
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
