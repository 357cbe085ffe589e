"""
C{cluster_control -l}: the nodes of the cluster, master first.
"""

from __future__ import annotations

import argparse
from typing import IO

from twisted.plugin import IPlugin
from zope.interface import implementer

from .action import IControlAction
from .formatting import missingNodes, table


@implementer(IPlugin, IControlAction)
class ListNodesAction:
    order = 10

    def addArguments(self, actions: argparse._MutuallyExclusiveGroup) -> None:
        actions.add_argument(
            "-l", "--list-nodes", action="store_true", help="List the connected nodes."
        )

    def isSelected(self, arguments: argparse.Namespace) -> bool:
        return bool(arguments.list_nodes)

    async def run(self, client: object, arguments: argparse.Namespace, out: IO[str]) -> int:
        nodes = await client.nodes()
        wanted = arguments.filter_node
        shown = [n for n in nodes if not wanted or n.name in wanted]
        missing = missingNodes(wanted, [n.name for n in nodes])
        if missing is not None and not shown:
            raise missing
        table(
            ("Name", "Address", "Type", "Version"),
            [(n.name, n.address, n.type, n.version) for n in shown],
            out,
        )
        if missing is not None:
            raise missing
        return 0
