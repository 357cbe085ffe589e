"""
C{cluster_control -a [-fs STATUS ...] [-fn NODE ...]}: the agents of the
cluster, with their status and the node they report to, as the master knows
them (a worker asks the master).
"""

from __future__ import annotations

import argparse
from typing import IO, Sequence

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..agents.status import AgentState
from .action import IControlAction
from .formatting import ControlError, table


def parseStatuses(words: Sequence[str]) -> list[AgentState]:
    """
    The statuses an operator asked for: C{Active}, C{disconnected},
    C{"Never connected"}, C{never_connected}, or C{Never connected} as two
    words.  Raises ValueError naming an unknown one.
    """
    states = []
    position = 0
    while position < len(words):
        pair = " ".join(words[position : position + 2])
        try:
            states.append(AgentState.parse(pair))
            position += 2
            continue
        except ValueError:
            pass
        states.append(AgentState.parse(words[position]))
        position += 1
    return states


@implementer(IPlugin, IControlAction)
class ListAgentsAction:
    order = 30

    def addArguments(self, actions: argparse._MutuallyExclusiveGroup) -> None:
        actions.add_argument(
            "-a", "--list-agents", action="store_true",
            help="List the agents of the cluster (with -fs, -fn to filter).",
        )

    def isSelected(self, arguments: argparse.Namespace) -> bool:
        return bool(arguments.list_agents)

    async def run(self, client: object, arguments: argparse.Namespace, out: IO[str]) -> int:
        try:
            states = parseStatuses(arguments.filter_status or ())
        except ValueError as e:
            raise ControlError(f"{e}.") from None
        agents = await client.agents(
            statuses=[s.value for s in states], nodes=list(arguments.filter_node or ())
        )
        table(
            ("ID", "Address", "Name", "Status", "Node"),
            [(a.id, a.ip, a.name, a.status, a.node) for a in agents],
            out,
        )
        if states:
            wanted = ", ".join(f"'{s.value}'" for s in states)
            out.write(f"Found {len(agents)} agent(s) with status {wanted}.\n")
        else:
            out.write(f"Listing {len(agents)} agent(s).\n")
        return 0
