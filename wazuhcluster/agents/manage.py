"""
The C{manage_agents} command: register, remove and list the agents of a node.

Agents are registered on the master only: on a worker, registration and
removal are refused (a later piece forwards them to the master over the
cluster), so that a worker's registry never diverges from the master's.  A
manager with no cluster (no ``ossec.conf``, no ``<cluster>`` section or a
disabled one) registers locally.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Sequence

from ..config import ConfigError, NoClusterSection, load_cluster_config
from ..control.blocking import callControl
from .registration import MASTER_UNREACHABLE
from ..protocol.agentcommands import RegisterAgent, RegistryRefused, RemoveAgent
from ..home import WazuhHome, addHomeArgument
from .clientkeys import AgentKey
from .registry import DEFAULT_GROUP, AgentRegistry, RegistryError

#: The refusal on a worker, as Wazuh words it.
WORKER_REFUSAL = MASTER_UNREACHABLE


def parser() -> argparse.ArgumentParser:
    """The command line of C{manage_agents}."""
    p = argparse.ArgumentParser(
        prog="manage_agents", description="Register, remove and list the agents of a Wazuh manager."
    )
    addHomeArgument(p)
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("-a", "--add", metavar="IP", help="register an agent connecting from IP (an address, a network or 'any')")
    action.add_argument("-r", "--remove", metavar="ID", help="remove the agent with this ID")
    action.add_argument("-l", "--list", action="store_true", help="list the registered agents")
    p.add_argument("-n", "--name", help="the name of the agent to register (with -a)")
    p.add_argument("-g", "--group", default=DEFAULT_GROUP, help="the group of the agent to register (default: default)")
    p.add_argument("-f", "--force", action="store_true", help="replace an agent that uses the same name or address")
    return p


def _localChangesRefused(home: WazuhHome) -> str | None:
    """
    Why this node may not change its registry itself (it is a worker, or its
    configuration cannot be read), or C{None} on a master or a standalone
    manager.
    """
    if not os.path.exists(home.ossecConf):
        return None
    try:
        config, _ = load_cluster_config(home.ossecConf)
    except NoClusterSection:
        return None
    except ConfigError as e:
        return f"Cannot tell whether this node is a worker: {e}"
    if config.disabled or config.node_type != "worker":
        return None
    return WORKER_REFUSAL


def run(argv: Sequence[str] | None, out: IO[str], err: IO[str]) -> int:
    """Run C{manage_agents} with C{argv}; the exit status (0 done, 1 refused)."""
    p = parser()
    arguments = p.parse_args(argv)
    if arguments.add is not None and not arguments.name:
        p.error("-a needs the agent's name with -n NAME")
    home = WazuhHome(os.path.abspath(arguments.home))
    registry = AgentRegistry(home)
    if arguments.list:
        keys = registry.read()
        for warning in keys.warnings:
            err.write(f"Warning: {warning}\n")
        _printTable(keys.agents, out)
        return 0
    refusal = _localChangesRefused(home)
    if refusal == WORKER_REFUSAL:
        return _forwardToMaster(home, arguments, out, err)
    if refusal is not None:
        err.write(f"{refusal}\n")
        return 1
    try:
        if arguments.add is not None:
            done = registry.register(arguments.name, arguments.add, arguments.group, arguments.force)
            for old in done.replaced:
                out.write(f"Agent {old.id} ({old.name}, {old.ip}) replaced.\n")
            out.write(f"Agent added with ID {done.agent.id} and key {done.agent.exported()}\n")
        else:
            removed = registry.remove(arguments.remove)
            out.write(f"Agent {removed.id} ({removed.name}, {removed.ip}) removed.\n")
    except RegistryError as e:
        err.write(f"{e}\n")
        return 1
    except OSError as e:
        err.write(f"Cannot change the agent registry in {home.path('etc')}: {e.strerror or e}; check the folder's permissions and free space.\n")
        return 1
    return 0


def _forwardToMaster(home: WazuhHome, arguments: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """
    On a worker: the change goes to the master, through this node's daemon
    and the cluster link; nothing changes locally (integrity sync brings
    the master's client.keys here).
    """
    try:
        if arguments.add is not None:
            answer = callControl(
                home.controlSocket, RegisterAgent,
                name=arguments.name, ip=arguments.add, group=arguments.group, force=arguments.force,
            )
            for old in answer["replaced"]:
                oldID, oldName, oldIP = old.split(" ", 2)
                out.write(f"Agent {oldID} ({oldName}, {oldIP}) replaced.\n")
            out.write(f"Agent added with ID {answer['agent_id']} and key {answer['key']}\n")
        else:
            answer = callControl(home.controlSocket, RemoveAgent, agent_id=arguments.remove)
            out.write(f"Agent {answer['agent_id']} ({answer['name']}, {answer['ip']}) removed.\n")
    except RegistryRefused as e:
        err.write(f"{e}\n")
        return 1
    except OSError:
        # No daemon here, or it does not answer: the master cannot be asked.
        err.write(f"{WORKER_REFUSAL}\n")
        return 1
    return 0


def _printTable(agents: Sequence[AgentKey], out: IO[str]) -> None:
    """The registered agents as a small table: ID, Name, IP."""
    rows = [("ID", "Name", "IP")] + [(a.id, a.name, a.ip) for a in agents]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
    out.write(f"Listing {len(agents)} agent(s).\n")


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: exits with L{run}'s status."""
    raise SystemExit(run(argv, sys.stdout, sys.stderr))
