"""
The API's endpoints, in the shape of the Wazuh 3.13 API's cluster, manager
and agent calls, and the route table that names them.

Everything about the cluster is read through the node's L{ClusterView}, the
same interface C{cluster_control} asks through the control socket (on a
worker it asks the master); registrations go through the node's
L{Registration}; what names a node runs on that node (L{NodeCalls}), and
C{/manager/...} is the same on the node that took the request.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from attrs import frozen

from .. import __version__
from ..agents.clientkeys import formatID
from ..agents.registration import MASTER_UNREACHABLE, Registration
from ..agents.status import AgentRecord, AgentState
from ..config import ClusterConfig
from ..control.server import ClusterView
from ..protocol.agentcommands import AgentNotFound, ListAgents, RegistryRefused
from ..protocol.nodeinfo import NotConnectedToMaster
from .envelope import ApiError
from .filters import PARAMETER_TYPES, ListQuery, valueAt
from .nodecalls import NodeCalls
from .router import HERE, MASTER, NAMED_NODE, Call, Route

#: The fields of a node, and of an agent, in lists.
NODE_FIELDS = ("name", "ip", "version", "type")
AGENT_FIELDS = ("id", "name", "ip", "status", "node_name", "version", "lastKeepAlive", "dateAdd", "group")


@frozen
class ApiContext:
    config: ClusterConfig
    view: ClusterView
    registration: Registration
    calls: NodeCalls


def _date(seconds: float) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else None


def _agentID(text: str) -> str:
    """An agent ID as client.keys writes it: C{1} is C{001}."""
    return formatID(int(text)) if text.isdigit() and text.isascii() and len(text) <= 9 else text


def _status(text: str) -> str:
    """An agent status as the list shows it, from what a client writes (C{never_connected})."""
    try:
        return AgentState.parse(text).value.lower()
    except ValueError:
        return text.lower()


class Endpoints:
    """The handlers of one node's API."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.config = context.config
        self.view = context.view

    # Answered by the node that took the request. -------------------------------

    async def welcome(self, call: Call) -> Any:
        return {
            "msg": "Welcome to the Wazuh cluster API",
            "api_version": f"v{__version__}",
            "hostname": socket.gethostname(),
            "node": self.config.node_name,
            "timestamp": _date(time.time()),
        }

    async def clusterStatus(self, call: Call) -> Any:
        return {"running": "yes", "enabled": "no" if self.config.disabled else "yes"}

    async def clusterConfig(self, call: Call) -> Any:
        config = self.config
        return {
            "name": config.name,
            "node_name": config.node_name,
            "node_type": config.node_type,
            "key": "*" * len(config.key) if config.key else "",
            "port": config.port,
            "bind_addr": config.bind_addr,
            "nodes": list(config.nodes),
            "hidden": "yes" if config.hidden else "no",
            "disabled": "yes" if config.disabled else "no",
        }

    async def clusterNode(self, call: Call) -> Any:
        return {"node": self.config.node_name, "cluster": self.config.name, "type": self.config.node_type}

    # Answered by the master. ----------------------------------------------------

    async def _nodes(self) -> list[dict[str, Any]]:
        try:
            found = await self.view.nodes()
        except NotConnectedToMaster:
            raise ApiError(3023) from None
        return [{"name": n.name, "ip": n.address, "version": n.version, "type": n.type} for n in found]

    async def clusterNodes(self, call: Call) -> Any:
        kind = call.query.get("type", "all")
        if kind not in ("master", "worker", "all"):
            raise ApiError(1728, f"{kind!r}; valid types are master, worker and all")
        items = [n for n in await self._nodes() if kind == "all" or n["type"] == kind]
        return call.listQuery.page(items, NODE_FIELDS)

    async def clusterNodeNamed(self, call: Call) -> Any:
        name = call.params["node_name"]
        for item in await self._nodes():
            if item["name"] == name:
                return _select(item, call.query.get("select", ""), NODE_FIELDS)
        raise ApiError(1730, name)

    async def healthcheck(self, call: Call) -> Any:
        try:
            _, health = await self.view.health()
        except NotConnectedToMaster:
            raise ApiError(3023) from None
        wanted = [n for n in call.query.get("node", "").split(",") if n]
        shown = {}
        for node in sorted(health, key=lambda n: n.type != "master"):  # the master first
            if wanted and node.name not in wanted:
                continue
            entry: dict[str, Any] = {
                "info": {
                    "name": node.name, "ip": node.address, "version": node.version,
                    "type": node.type, "n_active_agents": node.active_agents,
                }
            }
            if node.type == "worker":
                entry["status"] = _workerHealth(node)
            shown[node.name] = entry
        return {"n_connected_nodes": len(health), "nodes": shown}

    async def restartAll(self, call: Call) -> Any:
        names = [n["name"] for n in await self._nodes()]
        restarted, failed = [], {}
        # The master (listed first) last: its restart would cut the calls to the workers.
        for name in names[1:] + names[:1]:
            try:
                await self.context.calls.call(name, "restart", {})
            except ApiError as e:
                failed[name] = {"error": e.code, "message": e.message}
            else:
                restarted.append(name)
        if not restarted and failed:
            raise ApiError(1900, "; ".join(f"{n}: {f['message']}" for n, f in failed.items()))
        return {"msg": "Restarting cluster", "affected_nodes": restarted, "failed_nodes": failed}

    # Run on the node the path names (or this node, under /manager). ---------

    def onNode(self, operation: str, *passed: str) -> Any:
        """A handler that runs C{operation} on the node, with the query parameters C{passed}."""

        async def handler(call: Call) -> Any:
            node = call.params.get("node_id", self.config.node_name)
            arguments: dict[str, Any] = {name: call.query[name] for name in passed if name in call.query}
            if LIST in passed:
                arguments["list"] = dict(call.listQuery.raw)
            body = b""
            if operation.startswith("files."):
                if not call.query.get("path"):
                    raise ApiError(706)
                if operation == "files.put":
                    if call.contentType not in ("application/octet-stream", "application/xml"):
                        raise ApiError(804, call.contentType or "none")
                    body = call.body
            return await self.context.calls.call(node, operation, arguments, body)

        return handler

    # Agents (the master's registry). ---------------------------------------------

    async def _agentRecords(self) -> list[AgentRecord]:
        records: list[AgentRecord] = []
        listing = ""
        try:
            while True:
                page = await self.view.agentsPage(len(records), ListAgents.pageSize, [], [], True, listing)
                listing = page["listing"]
                records.extend(AgentRecord(**item) for item in page["agents"])
                if not page["agents"] or len(records) >= page["total"]:
                    return records
        except NotConnectedToMaster:
            raise ApiError(3023) from None

    async def agentsList(self, call: Call) -> Any:
        records = await self._agentRecords()
        olderThan = call.query.get("older_than")
        if olderThan:
            # 3.x: agents not seen (or, never connected, not added) for longer than that.
            limit = time.time() - _seconds(olderThan)
            records = [
                r for r in records
                if r.id != "000" and (r.last_keep_alive or r.date_add) and (r.last_keep_alive or r.date_add) < limit
            ]
        items = [_agentItem(r) for r in records]
        status = call.query.get("status")
        if status:
            try:
                wanted = {AgentState.parse(s).value for s in status.split(",")}
            except ValueError as e:
                raise ApiError(1729, str(e)) from None
            items = [i for i in items if i["status"] in wanted]
        for name in ("node_name", "name", "ip", "version", "group", "os.platform", "os.version", "os.name", "manager"):
            value = call.query.get(name)
            if value:
                choices = {v.lower() for v in value.split(",")}
                items = [i for i in items if _anyIn(valueAt(i, name), choices)]
        return call.listQuery.page(items, AGENT_FIELDS, normalisers={"status": _status}, always=("id",))

    async def agentNamed(self, call: Call) -> Any:
        agentID = _agentID(call.params["agent_id"])
        for record in await self._agentRecords():
            if record.id == agentID:
                return _select(_agentItem(record), call.query.get("select", ""), AGENT_FIELDS, always=("id",))
        raise ApiError(1701, agentID)

    async def agentAdd(self, call: Call) -> Any:
        """
        Register an agent: C{{"name": NAME, "ip": IP, "force": F}}; as in
        3.x, C{ip} defaults to C{any} and C{force} is a number (C{-1}: no;
        0 or more: replace an agent with the same name or address), or here
        also C{true}/C{false}.
        """
        body = call.json()
        name, ip, force = body.get("name"), body.get("ip", "any"), body.get("force", -1)
        if name is None or name == "":
            raise ApiError(604, "Missing field: 'name'")
        if not isinstance(name, str) or PARAMETER_TYPES["names"][0].fullmatch(name) is None:
            raise ApiError(601, "Field: name")
        if not isinstance(ip, str) or PARAMETER_TYPES["ips"][0].fullmatch(ip) is None:
            raise ApiError(606, "Field: ip")
        if isinstance(force, bool):
            replace = force
        elif isinstance(force, int):
            replace = force >= 0
        else:
            raise ApiError(600, "Field: force")
        if len(name) > 128:
            raise ApiError(1738, f"{len(name)} characters")
        try:
            answer = await self.context.registration.register(name, ip, "default", replace)
        except RegistryRefused as e:
            message = str(e)
            if message == MASTER_UNREACHABLE:
                raise ApiError(3023) from None
            message = message.replace("--force", '"force": 0')
            if "already used by agent" in message:
                raise ApiError(1705 if f"({name}, " in message else 1706, message) from None
            raise ApiError(1725, message) from None
        return {"id": answer["agent_id"], "key": answer["key"]}

    async def agentDelete(self, call: Call) -> Any:
        agentID = _agentID(call.params["agent_id"])
        if agentID == "000":
            raise ApiError(1703)
        try:
            answer = await self.context.registration.remove(agentID)
        except AgentNotFound:
            raise ApiError(1701, agentID) from None
        except RegistryRefused as e:
            if str(e) == MASTER_UNREACHABLE:
                raise ApiError(3023) from None
            raise ApiError(1731, str(e)) from None
        return {"msg": "All selected agents were removed", "affected_agents": [answer["agent_id"]]}


def _workerHealth(node: Any) -> dict[str, Any]:
    return {
        "sync_integrity_free": not node.sync_integrity_running,
        "last_sync_integrity": {
            "date_start_master": _date(node.integrity_start) or "n/a",
            "date_end_master": _date(node.integrity_end) or "n/a",
            "total_files": {
                "shared": node.integrity_shared, "missing": node.integrity_missing,
                "extra": node.integrity_extra, "extra_valid": node.integrity_extra_valid,
            },
        },
        "sync_agentinfo_free": not node.sync_agentinfo_running,
        "last_sync_agentinfo": {
            "date_start_master": _date(node.agentinfo_start) or "n/a",
            "date_end_master": _date(node.agentinfo_end) or "n/a",
            "total_agentinfo": node.agentinfo_total,
        },
        "sync_extravalid_free": True,
        "last_sync_agentgroups": {
            "date_start_master": _date(node.agentgroups_start) or "n/a",
            "date_end_master": _date(node.agentgroups_end) or "n/a",
            "total_agentgroups": node.agentgroups_total,
        },
        "last_keep_alive": _date(node.last_keep_alive) or "n/a",
    }


def _agentItem(record: AgentRecord) -> dict[str, Any]:
    manager = record.id == "000"
    return {
        "id": record.id,
        "name": record.name,
        "ip": record.ip,
        "status": record.status,
        "node_name": record.node,
        "version": record.version or None,
        "lastKeepAlive": "9999-12-31 23:59:59" if manager else _date(record.last_keep_alive),
        "dateAdd": _date(record.date_add),
        "group": [g for g in record.group.split(",") if g] if not manager else None,
    }


def _seconds(timeframe: str) -> int:
    """A 3.x timeframe (C{30}, C{90s}, C{15m}, C{12h}, C{7d}) in seconds."""
    unit = timeframe[-1] if timeframe[-1] in "smhd" else "s"
    number = int(timeframe.rstrip("smhd"))
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _anyIn(value: Any, choices: set[str]) -> bool:
    if isinstance(value, list):
        return any(str(v).lower() in choices for v in value)
    return value is not None and str(value).lower() in choices


def _select(item: dict[str, Any], select: str, fields: tuple[str, ...], always: tuple[str, ...] = ()) -> Any:
    """One item with the fields C{select} names (the list's C{select}, for one item)."""
    if not select:
        return item
    return ListQuery.fromQuery({"select": select}).page([item], fields, always=always)["items"][0]


#: What runs on a node: method, path under C{/cluster/:node_id/} (and
#: C{/manager/}), the node's operation, its query parameters (passed to the
#: operation) and whether it is a list.  C{stats/cluster} is not in 3.x's
#: C{/manager}.
NODE_ROUTES: list[tuple[str, str, str, dict[str, str], bool]] = [
    ("GET",    "status",        "status",        {}, False),
    ("GET",    "info",          "info",          {}, False),
    ("GET",    "configuration", "configuration", {"section": "names", "field": "names"}, False),
    ("GET",    "stats",         "stats",         {"date": "dates"}, False),
    ("GET",    "stats/hourly",  "stats.hourly",  {}, False),
    ("GET",    "stats/weekly",  "stats.weekly",  {}, False),
    ("GET",    "stats/cluster", "stats.cluster", {}, False),
    ("GET",    "logs",          "logs",          {"type_log": "names", "category": "search_param"}, True),
    ("GET",    "logs/summary",  "logs.summary",  {}, False),
    # offset and limit: taken, and unused, as in 3.x.
    ("GET",    "files",         "files.get",     {"path": "paths", "validation": "boolean", "offset": "numbers", "limit": "numbers"}, False),
    ("POST",   "files",         "files.put",     {"path": "paths", "overwrite": "boolean"}, False),
    ("DELETE", "files",         "files.delete",  {"path": "paths"}, False),
    ("PUT",    "restart",       "restart",       {}, False),
]

#: The list parameters a per-node list passes on, checked by the router.
LIST = "list"


def routes(context: ApiContext) -> list[Route]:
    """
    The route table of the API of one node, in the 3.x API's order: the
    first route that matches a path wins (so C{/cluster/nodes/info} is the
    node named C{info}).
    """
    e = Endpoints(context)

    def onNodes(prefix: str, where: str) -> list[Route]:
        return [
            Route(method, f"{prefix}/{suffix}", e.onNode(operation, *parameters, *([LIST] if listed else [])),
                  where, parameters, listed)
            for method, suffix, operation, parameters, listed in NODE_ROUTES
            if not (where == HERE and suffix == "stats/cluster")
        ]

    agentFilters = {
        **{name: "alphanumeric_param" for name in (
            "status", "node_name", "name", "version", "group", "os.platform", "os.version", "os.name", "manager",
        )},
        "ip": "ips", "older_than": "timeframe_type",
    }
    return [
        # method, path,                           handler,             where,  query parameters
        Route("GET",    "/",                         e.welcome,          HERE),
        Route("GET",    "/cluster/node",             e.clusterNode,      HERE),
        Route("GET",    "/cluster/nodes",            e.clusterNodes,     MASTER, {"type": "alphanumeric_param"}, listed=True),
        Route("GET",    "/cluster/nodes/:node_name", e.clusterNodeNamed, MASTER, {"select": "select_param"}),
        Route("GET",    "/cluster/healthcheck",      e.healthcheck,      MASTER, {"node": "array_names"}),
        Route("GET",    "/cluster/status",           e.clusterStatus,    HERE),
        Route("GET",    "/cluster/config",           e.clusterConfig,    HERE),
        Route("PUT",    "/cluster/restart",          e.restartAll,       MASTER),
        *onNodes("/cluster/:node_id", NAMED_NODE),
        *onNodes("/manager", HERE),
        Route("GET",    "/agents",                   e.agentsList,       MASTER, agentFilters, listed=True),
        Route("POST",   "/agents",                   e.agentAdd,         MASTER),
        Route("GET",    "/agents/:agent_id",         e.agentNamed,       MASTER, {"select": "select_param"}),
        Route("DELETE", "/agents/:agent_id",         e.agentDelete,      MASTER, {"purge": "text"}),
    ]
