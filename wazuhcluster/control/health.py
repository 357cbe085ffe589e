"""
C{cluster_control -i [more]}: the health of the cluster's connected nodes.
"""

from __future__ import annotations

import argparse
from typing import IO

from twisted.plugin import IPlugin
from zope.interface import implementer

from .action import IControlAction
from .formatting import date, missingNodes


@implementer(IPlugin, IControlAction)
class HealthAction:
    order = 20

    def addArguments(self, actions: argparse._MutuallyExclusiveGroup) -> None:
        actions.add_argument(
            "-i",
            "--health",
            nargs="?",
            const="basic",
            choices=("more", "basic"),
            metavar="more",
            help="Show the cluster's health; 'more' adds details per node.",
        )

    def isSelected(self, arguments: argparse.Namespace) -> bool:
        return arguments.health is not None

    async def run(self, client: object, arguments: argparse.Namespace, out: IO[str]) -> int:
        clusterName, nodes = await client.health()
        wanted = arguments.filter_node
        shown = [n for n in nodes if not wanted or n.name in wanted]
        missing = missingNodes(wanted, [n.name for n in nodes])
        if missing is not None and not shown:
            raise missing
        out.write(f"Cluster name: {clusterName}\n\n")
        out.write(f"Connected nodes ({len(shown)}):\n")
        for node in shown:
            if arguments.health == "more":
                out.write(f"\n    {node.name} ({node.address})\n")
                out.write(f"        Version: {node.version}\n")
                out.write(f"        Type: {node.type}\n")
                out.write(f"        Active agents: {node.active_agents}\n")
                if node.type == "master":
                    out.write(f"        Running since: {date(node.connected_since)}\n")
                else:
                    out.write(f"        Connected since: {date(node.connected_since)}\n")
                    out.write(f"        Last keep alive: {date(node.last_keep_alive)}\n")
                    out.write("        Integrity:\n")
                    out.write(f"            Synchronizing now: {'yes' if node.sync_integrity_running else 'no'}\n")
                    out.write(f"            Last synchronization: {date(node.integrity_start)} - {date(node.integrity_end)}\n")
                    out.write(
                        f"            Files: {node.integrity_shared} shared, {node.integrity_missing} missing,"
                        f" {node.integrity_extra} extra, {node.integrity_extra_valid} extra valid\n"
                    )
                    out.write(
                        f"        Agent groups received: {node.agentgroups_total}"
                        f" (last {date(node.agentgroups_start)} - {date(node.agentgroups_end)})\n"
                    )
                    out.write("        Agents-info:\n")
                    out.write(f"            Receiving now: {'yes' if node.sync_agentinfo_running else 'no'}\n")
                    out.write(f"            Last statuses received: {date(node.agentinfo_start)} - {date(node.agentinfo_end)}\n")
                    out.write(f"            Statuses in the last sync: {node.agentinfo_total}\n")
            else:
                detail = f"{node.type}, version {node.version}, {node.active_agents} active agents"
                if node.type == "worker":
                    detail += (
                        f", last keep alive {date(node.last_keep_alive)},"
                        f" integrity synced {date(node.integrity_end)},"
                        f" agents-info synced {date(node.agentinfo_end)}"
                    )
                out.write(f"    {node.name} ({node.address}): {detail}\n")
        if missing is not None:
            raise missing
        return 0
