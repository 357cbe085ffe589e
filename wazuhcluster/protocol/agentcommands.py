"""
Commands about agents: changes to the registry, which lives on the master,
and the master's list of agents with their status and node.

They are answered on a node's control socket (for C{manage_agents}) and, on
the master, on the cluster link: a worker forwards its operators'
registrations and deletions to the master and returns the master's answer.
"""

from __future__ import annotations

from twisted.protocols import amp

from .nodeinfo import NotConnectedToMaster


class RegistryRefused(Exception):
    """The registry did not make the change; the message says why."""


class AgentNotFound(RegistryRefused):
    """The agent named is not registered."""


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
    # The subclass first: AMP answers with the first error type that matches.
    errors = {AgentNotFound: b"AGENT_NOT_FOUND", RegistryRefused: b"REGISTRY_REFUSED"}


#: Agents per page of L{ListAgents}: an entry is at most about 700 bytes
#: serialised (a name of 128 characters, an IPv6 address, a node name of 64,
#: groups of 255), so a page stays below one sealed message.
AGENT_PAGE_SIZE = 80

AGENT_LIST = amp.AmpList(
    [
        (b"id", amp.Unicode()),
        (b"name", amp.Unicode()),
        (b"ip", amp.Unicode()),
        (b"status", amp.Unicode()),
        (b"node", amp.Unicode()),
        (b"last_keep_alive", amp.Float()),
        (b"version", amp.Unicode()),
        (b"date_add", amp.Float()),
        (b"group", amp.Unicode()),
    ]
)


class ListAgents(amp.Command):
    """
    A page of the registered agents (the manager, 000, first, then by ID),
    with their status and node; only those with one of C{statuses} and on
    one of C{nodes} when these are not empty.  C{details} adds each
    agent's version, group and registration date.

    A page without C{listing} takes a fresh listing and answers with its
    name in C{listing}; passing that name back gets the later pages from the
    same listing (kept a minute), so that an agent list read page by page is
    consistent whatever else happens meanwhile.
    """

    pageSize = AGENT_PAGE_SIZE

    arguments = [
        (b"offset", amp.Integer()),
        (b"limit", amp.Integer()),
        (b"statuses", amp.ListOf(amp.Unicode())),
        (b"nodes", amp.ListOf(amp.Unicode())),
        (b"details", amp.Boolean(optional=True)),
        (b"listing", amp.Unicode(optional=True)),
    ]
    response = [(b"agents", AGENT_LIST), (b"total", amp.Integer()), (b"listing", amp.Unicode())]
    errors = {NotConnectedToMaster: b"NOT_CONNECTED_TO_MASTER", RegistryRefused: b"REGISTRY_REFUSED"}
