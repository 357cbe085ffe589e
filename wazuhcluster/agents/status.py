"""
What the master knows of each registered agent: its status, and the node it
reports to.

The status comes from the agent's status file on the master (see
L{wazuhcluster.agents.agentinfo}): Active when its keep-alive is at most
C{agent_disconnection_time} seconds old, Disconnected when older, Pending
when the file is empty, Never connected when there is none.

The node comes from L{ReportingNodes}: each status the master takes from a
worker is recorded with the worker's name and the modification time it
received.  A status file newer than what was recorded was written by the
master's own manager since (the agent now reports to the master), and one
never received from a worker is the master's own.  The record is kept in
C{queue/cluster/agent-nodes.json} so that a restarted master still knows
where its agents are.  A node change is saved at once; changes of times
alone at most once a minute, so after a restart a few agents may show the
master until their worker sends its statuses again (which it does, all of
them, on its new connection).
"""

from __future__ import annotations

import enum
import json
import os
import socket
import threading
import time
from typing import Callable, Iterable, Iterator, NamedTuple

from attrs import evolve, frozen
from twisted.logger import Logger

from ..files import writeFileAtomically
from .agentinfo import AGENT_INFO_FOLDER, statusFileName, versionIn
from .clientkeys import MANAGER_ID, AgentKey, readClientKeys

#: Seconds between saves of L{ReportingNodes} when only times changed.
SAVE_STALE_EVERY = 60.0

#: The node shown for an agent that never sent a status.
UNKNOWN_NODE = "unknown"

#: Low bits of a L{ReportingNodes} record that hold its node's index.
_NODE_BITS = 20
_NODE_MASK = (1 << _NODE_BITS) - 1


class AgentState(enum.Enum):
    ACTIVE = "Active"
    DISCONNECTED = "Disconnected"
    PENDING = "Pending"
    NEVER_CONNECTED = "Never connected"

    @classmethod
    def parse(cls, text: str) -> "AgentState":
        """A state from what an operator types: C{active}, C{Never connected}, C{never_connected}..."""
        wanted = text.strip().lower().replace("_", " ")
        for state in cls:
            if state.value.lower() == wanted:
                return state
        choices = ", ".join(repr(s.value) for s in cls)
        raise ValueError(f"unknown agent status {text!r}; choose among {choices}")


@frozen
class AgentRecord:
    """One agent as C{cluster_control -a} and the API show it."""

    id: str
    name: str
    ip: str
    status: str
    node: str
    #: Seconds since the epoch of the last keep-alive, 0 for none.
    last_keep_alive: float
    version: str
    #: Seconds since the epoch of the registration, 0 when unknown (details only).
    date_add: float = 0.0
    #: The agent's groups, comma-separated (details only).
    group: str = ""


class RegisteredAgent(NamedTuple):
    """One registered agent as a listing needs it (its key is not kept)."""

    id: str
    name: str
    ip: str


class RegisteredAgents:
    """
    The agents of a client.keys, in file order, as the master keeps them
    between listings: one C{"ID NAME IP"} string per agent (the fields hold
    no spaces) instead of an L{AgentKey} of four, and the names of their
    status files.  With 50,000 agents: about 9 MB instead of 23.
    """

    __slots__ = ("_lines", "statusNames")

    def __init__(self, agents: Iterable[AgentKey] = ()) -> None:
        agents = tuple(agents)
        self._lines = tuple(f"{agent.id} {agent.name} {agent.ip}" for agent in agents)
        #: The status file names of the agents that can have one, each
        #: mapped to itself: whoever keeps a name received from a worker
        #: keeps this copy instead (L{ReportingNodes} does, for every agent).
        self.statusNames: dict[str, str] = {
            name: name for agent in agents if (name := statusFileName(agent.name, agent.ip)) is not None
        }

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[RegisteredAgent]:
        for line in self._lines:
            yield RegisteredAgent(*line.split(" "))


class ReportingNodes:
    """
    The node each agent's newest status came from, by status file name, with
    the modification time received (in nanoseconds).  Safe to use from
    several threads.

    Each agent's record is one integer, the time shifted left by
    L{_NODE_BITS} with the index of its node's name in a table of names, not
    a tuple of a name and an integer: 50,000 agents hold 3.6 MB less, and a
    record read back from the file shares its node's name.
    """

    log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, int] = {}
        self._names: list[str] = []
        self._indexes: dict[str, int] = {}
        #: A node changed since the last save.
        self._dirty = False
        #: Only modification times changed since the last save.
        self._stale = False
        self._savedAt = 0.0

    def load(self) -> None:
        """Read the saved record (blocking); a missing or damaged file means none."""
        try:
            with open(self.path, "rb") as f:
                saved = json.load(f)
            entries = [(str(name), str(entry[0]), int(entry[1])) for name, entry in saved["agents"].items()]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            self.log.warn(
                "Ignoring {path}, which cannot be read ({why}): agents show the master as their"
                " node until their workers send their statuses again.",
                path=self.path, why=e,
            )
            return
        with self._lock:
            self._records, self._names, self._indexes = {}, [], {}
            for name, node, mtimeNs in entries:
                self._records[name] = self._pack(node, mtimeNs)

    def _pack(self, node: str, mtimeNs: int) -> int:
        """One agent's record (under the lock)."""
        index = self._indexes.get(node)
        if index is None:
            if len(self._names) >= 1 << _NODE_BITS:
                self._forgetUnusedNames()
                if len(self._names) >= 1 << _NODE_BITS:
                    raise ValueError(f"more than {1 << _NODE_BITS} nodes hold agents at once")
            index = self._indexes[node] = len(self._names)
            self._names.append(node)
        return (mtimeNs << _NODE_BITS) | index

    def _unpack(self, record: int) -> tuple[str, int]:
        return self._names[record & _NODE_MASK], record >> _NODE_BITS

    def _forgetUnusedNames(self) -> None:
        """Rebuild the table of names with only those in use (very many names seen over time)."""
        entries = [(name, *self._unpack(record)) for name, record in self._records.items()]
        self._records, self._names, self._indexes = {}, [], {}
        for name, node, mtimeNs in entries:
            self._records[name] = self._pack(node, mtimeNs)

    def record(self, fileName: str, node: str, mtimeNs: int) -> None:
        with self._lock:
            previous = self._records.get(fileName)
            packed = self._pack(node, mtimeNs)
            if previous != packed:
                self._records[fileName] = packed
                if previous is None or previous & _NODE_MASK != packed & _NODE_MASK:
                    self._dirty = True
                else:
                    self._stale = True

    def recorded(self, fileName: str) -> tuple[str, int] | None:
        with self._lock:
            record = self._records.get(fileName)
            return None if record is None else self._unpack(record)

    def keepOnly(self, fileNames: Iterable[str]) -> None:
        """Forget the agents whose status file name is not in C{fileNames}."""
        keep = fileNames if isinstance(fileNames, (set, frozenset, dict)) else set(fileNames)
        with self._lock:
            gone = [name for name in self._records if name not in keep]
            for name in gone:
                del self._records[name]
            self._dirty = self._dirty or bool(gone)

    def nodeOf(self, fileName: str, mtimeNs: int, masterName: str) -> str:
        """The node of the agent whose status file has modification time C{mtimeNs}."""
        entry = self.recorded(fileName)
        if entry is None or mtimeNs > entry[1]:
            return masterName
        return entry[0]

    def save(self, now: float = 0.0, staleFor: float = SAVE_STALE_EVERY) -> bool:
        """
        Write the record (blocking) if a node changed, or if only times
        changed and the last save is older than C{staleFor} seconds; whether
        it was written.  Times change on every status, nodes rarely: saving
        50,000 entries after every batch would cost more than the batch.
        """
        with self._lock:
            if not (self._dirty or (self._stale and now - self._savedAt >= staleFor)):
                return False
            snapshot = {name: list(self._unpack(record)) for name, record in self._records.items()}
            self._dirty = self._stale = False
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            writeFileAtomically(self.path, json.dumps({"agents": snapshot}).encode(), 0o640, durable=False)
        except BaseException:
            with self._lock:
                self._dirty = True
            raise
        self._savedAt = now
        return True


def listAgents(
    home: str,
    nodes: ReportingNodes,
    masterName: str,
    now: float,
    disconnectionTime: float,
    withDetails: bool = False,
    registered: Callable[[], Iterable[AgentKey | RegisteredAgent]] | None = None,
) -> list[AgentRecord]:
    """
    Every registered agent, the manager (000) first, with its status and
    node (blocking: reads client.keys and stats every status file).
    C{withDetails} also reads each agent's version, group and registration
    date (one more file read per agent).  C{registered} gives the agents
    of client.keys when the caller keeps them parsed.
    """
    if registered is None:
        agents: Iterable[AgentKey | RegisteredAgent] = readClientKeys(os.path.join(home, "etc", "client.keys")).agents
    else:
        agents = registered()
    folder = os.path.join(home, AGENT_INFO_FOLDER)
    stats: dict[str, os.stat_result] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        stats[entry.name] = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
    except FileNotFoundError:
        pass
    records = [
        AgentRecord(MANAGER_ID, socket.gethostname(), "127.0.0.1", AgentState.ACTIVE.value, masterName, now, "")
    ]
    for agent in agents:
        if agent.id == MANAGER_ID:
            continue
        fileName = statusFileName(agent.name, agent.ip)
        st = stats.get(fileName) if fileName is not None else None
        if st is None:
            records.append(
                AgentRecord(agent.id, agent.name, agent.ip, AgentState.NEVER_CONNECTED.value, UNKNOWN_NODE, 0.0, "")
            )
            continue
        if st.st_size == 0:
            state = AgentState.PENDING
        elif now - st.st_mtime > disconnectionTime:
            state = AgentState.DISCONNECTED
        else:
            state = AgentState.ACTIVE
        version = _version(os.path.join(folder, fileName)) if withDetails and st.st_size else ""
        records.append(
            AgentRecord(
                agent.id, agent.name, agent.ip, state.value,
                nodes.nodeOf(fileName, st.st_mtime_ns, masterName), st.st_mtime, version,
            )
        )
    if withDetails:
        added = readRegistrationDates(home)
        records = [
            evolve(r, date_add=added.get(r.id, 0.0), group=_group(home, r.id)) if r.id != MANAGER_ID else r
            for r in records
        ]
    return records


def _group(home: str, agentID: str) -> str:
    try:
        with open(os.path.join(home, "queue", "agent-groups", agentID), "rb") as f:
            return f.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return ""


#: Where Wazuh keeps the date of each registration: C{ID NAME IP YYYY-MM-DD HH:MM:SS} lines.
REGISTRATION_DATES = os.path.join("queue", "agents-timestamp")


def readRegistrationDates(home: str) -> dict[str, float]:
    """The registration time of each agent ID, from C{queue/agents-timestamp} (blocking)."""
    dates: dict[str, float] = {}
    try:
        with open(os.path.join(home, REGISTRATION_DATES), "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return dates
    for line in lines:
        parts = line.split()
        if len(parts) >= 5:
            try:
                dates[parts[0]] = time.mktime(time.strptime(f"{parts[3]} {parts[4]}", "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                continue
    return dates


def _version(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return versionIn(f.read(4096))
    except OSError:
        return ""


def activeByNode(records: Iterable[AgentRecord]) -> dict[str, int]:
    """How many agents are active on each node."""
    counts: dict[str, int] = {}
    for record in records:
        if record.status == AgentState.ACTIVE.value:
            counts[record.node] = counts.get(record.node, 0) + 1
    return counts
