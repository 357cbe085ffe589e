"""
Commands that change the agent registry, which lives on the master.

They are answered on a node's control socket (for C{manage_agents}) and, on
the master, on the cluster link: a worker forwards its operators'
registrations and deletions to the master and returns the master's answer.
"""

from __future__ import annotations

from twisted.protocols import amp


class RegistryRefused(Exception):
    """The registry did not make the change; the message says why."""


class RegisterAgent(amp.Command):
    """Register an agent; answered with its ID, its key, and the agents it replaced."""

    arguments = [
        (b"name", amp.Unicode()),
        (b"ip", amp.Unicode()),
        (b"group", amp.Unicode()),
        (b"force", amp.Boolean()),
    ]
    response = [
        (b"agent_id", amp.Unicode()),
        (b"key", amp.Unicode()),
        (b"replaced", amp.ListOf(amp.Unicode())),
    ]
    errors = {RegistryRefused: b"REGISTRY_REFUSED"}


class RemoveAgent(amp.Command):
    """Remove an agent; answered with what was removed."""

    arguments = [(b"agent_id", amp.Unicode())]
    response = [(b"agent_id", amp.Unicode()), (b"name", amp.Unicode()), (b"ip", amp.Unicode())]
    errors = {RegistryRefused: b"REGISTRY_REFUSED"}
