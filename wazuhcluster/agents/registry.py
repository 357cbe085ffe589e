"""
Registering and removing agents on the master, one process at a time.

The registry is the node's C{etc/client.keys}.  Every change reads the
file, changes the lines of the agents concerned and writes it back
atomically, all under an exclusive C{flock} so that concurrent
C{manage_agents} runs never allocate the same ID or lose each other's
agents.

The lock is C{etc/client.keys.lock}, next to the file it guards: the file
itself cannot be locked because every write replaces it with a new inode,
the folder is there whenever client.keys is, and integrity sync copies only
the files its table names, so the lock (and the atomic writes' temporaries)
never travels to the workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator

from attrs import frozen

from ..files import writeFileAtomically
from ..home import WazuhHome
from .agentinfo import AGENT_INFO_FOLDER, parseStatusFileName, statusFileName
from .status import REGISTRATION_DATES
from .clientkeys import (
    AgentKey,
    ClientKeys,
    formatID,
    groupProblem,
    ipProblem,
    nameProblem,
    newKey,
    readClientKeys,
)

#: Group given to an agent registered without one.
DEFAULT_GROUP = "default"


class RegistryError(Exception):
    """A registration or removal refused; the message is a sentence for the operator."""


class UnknownAgent(RegistryError):
    """The agent to remove is not registered."""


@frozen
class Registration:
    """What a registration did: the new agent, and the agents it replaced (with force)."""

    agent: AgentKey
    group: str
    replaced: tuple[AgentKey, ...] = ()


@frozen
class AgentRegistry:
    """The agents registered in one node's home, and the files that belong to them."""

    home: WazuhHome

    @property
    def keysPath(self) -> str:
        return self.home.path("etc", "client.keys")

    @property
    def lockPath(self) -> str:
        return self.home.path("etc", "client.keys.lock")

    def groupPath(self, agentID: str) -> str:
        """The file naming the group of agent C{agentID}."""
        return self.home.path("queue", "agent-groups", agentID)

    def agentInfoPath(self, agent: AgentKey) -> str | None:
        """
        The file of the agent's last keep-alive, C{NAME-IP}; C{None} for an
        agent registered with a network, whose name cannot be a file name.
        """
        fileName = statusFileName(agent.name, agent.ip)
        if fileName is None:
            return None
        return self.home.path(AGENT_INFO_FOLDER, fileName)

    def removeFilesOfUnregistered(self, lock: bool = True) -> tuple[list[str], list[str]]:
        """
        Remove the group and status files of agents that are not registered
        (removed on the master, or added by hand on a worker).  Returns the
        paths removed and the warnings of client.keys' malformed lines.
        Only file names that stand for an agent (an ID, a C{NAME-IP}) are
        considered; anything else in those folders is left alone.

        Nothing is removed when there is no client.keys (a node that never
        synchronised with its master).  C{lock=False} is for a worker, where
        nothing registers agents locally (registrations go to the master)
        and integrity sync, which writes client.keys, awaits the cleanup: no
        lock file is then created in its etc/.  Status files are matched by name:
        only names of status files (C{NAME-IP}) are considered.
        """
        if not os.path.exists(self.keysPath):
            return [], []
        if not lock:
            return self._removeFilesOfUnregistered()
        # Under the registry's lock: a registration writes the group file
        # before client.keys, and must not see it removed in between.
        with self._locked():
            return self._removeFilesOfUnregistered()

    def _removeFilesOfUnregistered(self) -> tuple[list[str], list[str]]:
        keys = self.read()
        agents = keys.agents
        ids = {agent.id for agent in agents}
        statusNames = {statusFileName(agent.name, agent.ip) for agent in agents}
        removed = []
        for folder, keep in (
            (
                self.home.path("queue", "agent-groups"),
                lambda name: name in ids or not (name.isdigit() and name.isascii()),
            ),
            (
                self.home.path(AGENT_INFO_FOLDER),
                lambda name: name in statusNames or parseStatusFileName(name) is None,
            ),
        ):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(folder, name)
                if keep(name) or not os.path.isfile(path) or os.path.islink(path):
                    continue
                if name.startswith("."):
                    continue  # a temporary being written
                _removeIfPresent(path)
                removed.append(path)
        return removed, keys.warnings

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's lock, waiting for any other process holding it."""
        os.makedirs(os.path.dirname(self.lockPath), exist_ok=True)
        fd = os.open(self.lockPath, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> ClientKeys:
        """The registry as it is now (readers need no lock: writes are atomic)."""
        return readClientKeys(self.keysPath)

    def list(self) -> tuple[AgentKey, ...]:
        """The registered agents, in file order."""
        return self.read().agents

    def register(
        self,
        name: str,
        ip: str,
        group: str = DEFAULT_GROUP,
        force: bool = False,
    ) -> Registration:
        """
        Register a new agent called C{name} connecting from C{ip} in C{group},
        with a fresh ID and key.

        An agent already using the name or the address is refused with
        L{RegistryError}, unless C{force}, which removes it first (with its
        files).  The group file is written before client.keys so that a
        registered agent always has its group.
        """
        problem = nameProblem(name) or ipProblem(ip) or groupProblem(group)
        if problem is not None:
            raise RegistryError(f"Cannot register the agent: {problem}.")
        with self._locked():
            keys = self.read()
            replaced = keys.conflicts(name, ip)
            if replaced and not force:
                raise RegistryError(_conflictMessage(name, ip, replaced))
            for old in replaced:
                keys = keys.withoutAgent(old.id)
            agent = AgentKey(keys.nextID(), name, ip, newKey())
            keys = keys.withAgent(agent)
            groupFile = self.groupPath(agent.id)
            os.makedirs(os.path.dirname(groupFile), exist_ok=True)
            writeFileAtomically(groupFile, group.encode("ascii") + b"\n", 0o660)
            try:
                self._write(keys)
            except BaseException:
                _removeIfPresent(groupFile)
                raise
            for old in replaced:
                self._removeFilesOf(old)
            self._recordDates(add=agent, remove={old.id for old in replaced})
        return Registration(agent, group, replaced)

    def remove(self, agentID: str) -> AgentKey:
        """
        Remove agent C{agentID} (marked C{!} in client.keys, as Wazuh does)
        and its group and agent-info files.  An ID that is not registered
        is refused with L{RegistryError}.
        """
        if agentID.isdigit() and agentID.isascii() and len(agentID) <= 9:
            candidates = (agentID, formatID(int(agentID)))
        else:
            candidates = (agentID,)
        with self._locked():
            keys = self.read()
            agent = next(
                (a for a in map(keys.agent, candidates) if a is not None), None
            )
            if agent is None:
                raise UnknownAgent(
                    f"No agent with ID {agentID!r} is registered; list them with manage_agents -l."
                )
            self._write(keys.withoutAgent(agent.id))
            self._removeFilesOf(agent)
            self._recordDates(remove={agent.id})
        return agent

    def _recordDates(self, add: AgentKey | None = None, remove: set[str] = frozenset()) -> None:
        """
        Keep C{queue/agents-timestamp} as Wazuh does: one line per agent,
        C{ID NAME IP YYYY-MM-DD HH:MM:SS}, the time of its registration.
        Only the date of a listing depends on it: a failure to write it is
        not a failed registration.
        """
        path = self.home.path(REGISTRATION_DATES)
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError:
            return
        kept = [line for line in lines if line.split()[:1] and line.split()[0] not in remove]
        if add is not None:
            kept = [line for line in kept if line.split()[0] != add.id]
            kept.append(f"{add.id} {add.name} {add.ip} {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            writeFileAtomically(path, "".join(line + "\n" for line in kept).encode("utf-8"), 0o660)
        except OSError:
            pass

    def _write(self, keys: ClientKeys) -> None:
        """Replace client.keys with C{keys}, all or nothing."""
        writeFileAtomically(self.keysPath, keys.serialise(), 0o640)

    def _removeFilesOf(self, agent: AgentKey) -> None:
        """Remove what this node keeps about a removed agent."""
        _removeIfPresent(self.groupPath(agent.id))
        info = self.agentInfoPath(agent)
        if info is not None:
            _removeIfPresent(info)


def _conflictMessage(name: str, ip: str, agents: tuple[AgentKey, ...]) -> str:
    """The refusal of a registration whose name or address is taken."""
    holders = ", ".join(f"{a.id} ({a.name}, {a.ip})" for a in agents)
    return (
        f"Cannot register the agent {name} with address {ip}: the name or the "
        f"address is already used by agent {holders}; remove it first or use "
        f"--force to replace it."
    )


def _removeIfPresent(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
