"""
C{cluster_control}: ask a running node about its cluster.

    cluster_control --home /var/ossec -l [-fn NODE ...]
    cluster_control --home /var/ossec -i [more] [-fn NODE ...]
    cluster_control --home /var/ossec -a [-fs STATUS ...] [-fn NODE ...]

The actions are plugins (L{IControlAction}) found in C{twisted/plugins/}.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import react
from twisted.plugin import getPlugins

from ..config import ConfigError, load_cluster_config
from ..home import WazuhHome, addHomeArgument
from ..protocol.agentcommands import RegistryRefused
from ..protocol.nodeinfo import NotConnectedToMaster
from .action import IControlAction
from .client import ControlClient
from .formatting import ControlError


def findActions() -> list[IControlAction]:
    """Every installed action, in help order."""
    import twisted.plugins

    return sorted(getPlugins(IControlAction, twisted.plugins), key=lambda a: a.order)


def parser(actions: Sequence[IControlAction]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster_control", description="Show the state of a Wazuh cluster."
    )
    addHomeArgument(parser)
    parser.add_argument(
        "-fn", "--filter-node", nargs="+", metavar="NODE", help="Only these nodes."
    )
    parser.add_argument(
        "-fs", "--filter-agent-status", dest="filter_status", nargs="+", metavar="STATUS",
        help="With -a: only agents with these statuses (Active, Disconnected, Pending, 'Never connected').",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    for action in actions:
        action.addArguments(group)
    return parser


async def _run(reactor: object, action: IControlAction, arguments: argparse.Namespace,
               home: WazuhHome, out: IO[str], err: IO[str]) -> int:
    try:
        client = await ControlClient.connect(reactor, home.controlSocket)
    except ConnectError:
        err.write(
            f"Error: cannot reach the cluster daemon at {home.controlSocket}: is it running?\n"
        )
        return 1
    try:
        return await runAction(action, client, arguments, out, err)
    finally:
        client.close()


async def runAction(action: IControlAction, client: ControlClient, arguments: argparse.Namespace,
                    out: IO[str], err: IO[str]) -> int:
    """Run C{action}; its errors go to C{err}, one line each; the exit status."""
    try:
        return await action.run(client, arguments, out)
    except NotConnectedToMaster:
        err.write("Error: this worker is not connected to the master; try again later.\n")
    except RegistryRefused as e:
        err.write(f"Error: {e}.\n")
    except ControlError as e:
        err.writelines(f"Error: {line}\n" for line in e.lines)
    return 1


def main(argv: Sequence[str] | None = None, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> None:
    actions = findActions()
    arguments = parser(actions).parse_args(argv)
    action = next(a for a in actions if a.isSelected(arguments))
    home = WazuhHome(os.path.abspath(arguments.home))
    try:
        config, _ = load_cluster_config(home.ossecConf)
    except ConfigError as e:
        err.write(f"Error: {e}\n")
        raise SystemExit(1)
    if config.disabled:
        err.write("Cluster is not running.\n")
        raise SystemExit(1)

    def start(reactor: object) -> Deferred:
        async def run() -> None:
            status = await _run(reactor, action, arguments, home, out, err)
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(run())

    react(start)
