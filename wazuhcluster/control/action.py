"""
What a C{cluster_control} action is.

Each action (C{-l}, C{-i}, and those later issues add) is a plugin in
C{twisted/plugins/} providing L{IControlAction}; C{cluster_control} finds
them with C{twisted.plugin.getPlugins}, so adding one touches no other.
"""

from __future__ import annotations

import argparse
from typing import IO

from zope.interface import Attribute, Interface


class IControlAction(Interface):
    """One action of C{cluster_control}."""

    order = Attribute("Where the action's options come in the help text (small first).")

    def addArguments(actions: argparse._MutuallyExclusiveGroup) -> None:
        """Add this action's option to the group of mutually exclusive actions."""

    def isSelected(arguments: argparse.Namespace) -> bool:
        """Whether the command line asks for this action."""

    async def run(client: object, arguments: argparse.Namespace, out: IO[str]) -> int:
        """
        Do the action with a connected ControlClient; return the exit status.
        Raise L{wazuhcluster.control.formatting.ControlError} for what goes
        to standard error, after what the action printed, if anything.
        """
