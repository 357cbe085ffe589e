"""
The API's endpoints, in the shape of the Wazuh 3.x API's cluster and agent
calls.

Everything about the cluster is read through the node's L{ClusterView}, the
same interface C{cluster_control} asks through the control socket (on a
worker it asks the master); registrations go through the node's
L{Registration}; what names a node runs on that node (L{NodeCalls}).
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
from .envelope import ApiError, listOf
from .nodecalls import NodeCalls
from .router import Call, Route

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


def routes(context: ApiContext) -> list[Route]:
    """The route table of the API of one node."""
    config = context.config
    view = context.view

    async def nodes() -> list[dict[str, Any]]:
        try:
            found = await view.nodes()
        except NotConnectedToMaster:
            raise ApiError(3023, status=503) from None
        return [{"name": n.name, "ip": n.address, "version": n.version, "type": n.type} for n in found]

    async def welcome(call: Call) -> Any:
        return {
            "msg": "Welcome to the Wazuh cluster API",
            "api_version": f"v{__version__}",
            "hostname": socket.gethostname(),
            "node": config.node_name,
            "timestamp": _date(time.time()),
        }

    async def clusterStatus(call: Call) -> Any:
        return {"running": "yes", "enabled": "no" if config.disabled else "yes"}

    async def clusterConfig(call: Call) -> Any:
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

    async def clusterNode(call: Call) -> Any:
        return {"node": config.node_name, "cluster": config.name, "type": config.node_type}

    async def clusterNodes(call: Call) -> Any:
        kind = call.query.get("type", "all")
        if kind not in ("master", "worker", "all"):
            raise ApiError(1728, f"{kind!r}; choose master, worker or all")
        items = [n for n in await nodes() if kind == "all" or n["type"] == kind]
        return listOf(items, call.query, NODE_FIELDS)

    async def clusterNodeNamed(call: Call) -> Any:
        name = call.params["node_name"]
        for item in await nodes():
            if item["name"] == name:
                return item
        raise ApiError(1730, name, status=404)

    async def healthcheck(call: Call) -> Any:
        try:
            _, health = await view.health()
        except NotConnectedToMaster:
            raise ApiError(3023, status=503) from None
        wanted = [n for n in call.query.get("node", "").split(",") if n]
        shown = {}
        for node in health:
            if wanted and node.name not in wanted:
                continue
            entry: dict[str, Any] = {
                "info": {
                    "name": node.name, "ip": node.address, "version": node.version,
                    "type": node.type, "n_active_agents": node.active_agents,
                }
            }
            if node.type == "worker":
                entry["status"] = {
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
            shown[node.name] = entry
        return {"n_connected_nodes": len(health), "nodes": shown}

    def onNode(operation: str) -> Any:
        async def handler(call: Call) -> Any:
            node = call.params.get("node_id", config.node_name)
            arguments: dict[str, Any] = {}
            if operation.startswith("files."):
                arguments["path"] = call.query.get("path", "")
                if not arguments["path"]:
                    raise ApiError(600, "give the file with ?path=etc/rules/NAME.xml")
                arguments["overwrite"] = call.query.get("overwrite", "false").lower() == "true"
            return await context.calls.call(node, operation, arguments, call.body)

        return handler

    async def restartAll(call: Call) -> Any:
        names = [n["name"] for n in await nodes()]
        restarted, failed = [], {}
        # The master (listed first) last: its restart would cut the calls to the workers.
        for name in names[1:] + names[:1]:
            try:
                await context.calls.call(name, "restart", {})
            except ApiError as e:
                failed[name] = {"error": e.code, "message": e.message}
            else:
                restarted.append(name)
        if not restarted and failed:
            raise ApiError(1750, "; ".join(f"{n}: {f['message']}" for n, f in failed.items()), status=500)
        return {"msg": "Restarting cluster", "affected_nodes": restarted, "failed_nodes": failed}

    async def agentRecords() -> list[AgentRecord]:
        records: list[AgentRecord] = []
        listing = ""
        try:
            while True:
                page = await view.agentsPage(len(records), ListAgents.pageSize, [], [], True, listing)
                listing = page["listing"]
                records.extend(AgentRecord(**item) for item in page["agents"])
                if not page["agents"] or len(records) >= page["total"]:
                    return records
        except NotConnectedToMaster:
            raise ApiError(3023, status=503) from None

    def agentItem(record: AgentRecord) -> dict[str, Any]:
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

    async def agentsList(call: Call) -> Any:
        records = await agentRecords()
        status = call.query.get("status")
        if status:
            try:
                wanted = {AgentState.parse(s).value for s in status.split(",")}
            except ValueError as e:
                raise ApiError(600, str(e)) from None
            records = [r for r in records if r.status in wanted]
        node = call.query.get("node_name")
        if node:
            records = [r for r in records if r.node in node.split(",")]
        return listOf([agentItem(r) for r in records], call.query, AGENT_FIELDS)

    async def agentNamed(call: Call) -> Any:
        agentID = _agentID(call.params["agent_id"])
        for record in await agentRecords():
            if record.id == agentID:
                return agentItem(record)
        raise ApiError(1701, agentID, status=404)

    async def agentAdd(call: Call) -> Any:
        body = call.json()
        name, ip, force = body.get("name"), body.get("ip", "any"), body.get("force", False)
        if not isinstance(name, str) or not name or not isinstance(ip, str) or not isinstance(force, bool):
            raise ApiError(605, 'give {"name": NAME, "ip": IP} (and "force": true to replace an agent)')
        try:
            answer = await context.registration.register(name, ip, "default", force)
        except RegistryRefused as e:
            if str(e) == MASTER_UNREACHABLE:
                raise ApiError(3023, status=503) from None
            raise ApiError(1702, str(e).replace("--force", '"force": true')) from None
        return {"id": answer["agent_id"], "key": answer["key"]}

    async def agentDelete(call: Call) -> Any:
        agentID = _agentID(call.params["agent_id"])
        if agentID == "000":
            raise ApiError(1703, "the manager (000) cannot be removed")
        try:
            answer = await context.registration.remove(agentID)
        except AgentNotFound:
            raise ApiError(1701, agentID, status=404) from None
        except RegistryRefused as e:
            if str(e) == MASTER_UNREACHABLE:
                raise ApiError(3023, status=503) from None
            raise ApiError(1703, str(e)) from None
        return {"msg": "All selected agents were removed", "affected_agents": [answer["agent_id"]]}

    return [
        Route("GET", "/", welcome),
        Route("GET", "/cluster/status", clusterStatus),
        Route("GET", "/cluster/config", clusterConfig),
        Route("GET", "/cluster/node", clusterNode),
        Route("GET", "/cluster/nodes", clusterNodes),
        Route("GET", "/cluster/healthcheck", healthcheck),
        Route("PUT", "/cluster/restart", restartAll),
        Route("GET", "/cluster/nodes/:node_name", clusterNodeNamed),
        Route("GET", "/cluster/:node_id/info", onNode("info")),
        Route("GET", "/cluster/:node_id/status", onNode("status")),
        Route("GET", "/cluster/:node_id/stats", onNode("stats")),
        Route("GET", "/cluster/:node_id/files", onNode("files.get")),
        Route("POST", "/cluster/:node_id/files", onNode("files.put")),
        Route("DELETE", "/cluster/:node_id/files", onNode("files.delete")),
        Route("PUT", "/cluster/:node_id/restart", onNode("restart")),
        Route("GET", "/agents", agentsList),
        Route("POST", "/agents", agentAdd),
        Route("GET", "/agents/:agent_id", agentNamed),
        Route("DELETE", "/agents/:agent_id", agentDelete),
    ]
