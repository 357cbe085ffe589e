"""
Reading and writing C{etc/client.keys}, the registry of agents, as Wazuh does.

One agent a line: C{ID NAME IP KEY}.  A real file also holds blank lines,
C{#} comments and removed agents (C{ID !NAME IP KEY}); a hand-edited one may
hold lines that are none of these.  The parser keeps every line's bytes, so
that a registration or removal rewrites only the line of the agent it
concerns: whatever an operator or Wazuh put in the file survives, even what
this reader does not understand.
"""

from __future__ import annotations

import base64
import enum
import io
import ipaddress
import re
import secrets

from attrs import evolve, frozen

#: The ID of the manager itself, never given to an agent.
MANAGER_ID = "000"

#: Longest agent name Wazuh accepts.
MAX_NAME_LENGTH = 128

#: Longest group name Wazuh accepts.
MAX_GROUP_LENGTH = 255

#: An agent ID: three digits or more (and no more than nine: Wazuh's are far
#: shorter, and a number of thousands of digits cannot even be converted).
_ID = re.compile(r"[0-9]{3,9}\Z")
_RAW_ID = re.compile(rb"\s*([0-9]{3,9})\s")
#: The only characters of an address or a network: no scope ID (C{%eth0}),
#: which may hold anything, spaces and newlines included.
_ADDRESS_CHARACTERS = re.compile(r"[0-9A-Fa-f:./]+\Z")
_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_KEY = re.compile(r"[0-9a-fA-F]{64}\Z")


def formatID(number: int) -> str:
    """An agent ID as Wazuh writes it: zero-padded to at least three digits."""
    return f"{number:03d}"


def newKey() -> str:
    """A fresh agent key: 64 random hex characters."""
    return secrets.token_hex(32)


def nameProblem(name: str) -> str | None:
    """Why C{name} cannot be an agent name, or C{None} when it can."""
    if not _NAME.match(name):
        return (
            f"the agent name {name!r} may only hold letters, digits, '-', '_' and '.'"
        )
    if len(name) > MAX_NAME_LENGTH:
        return f"the agent name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
    return None


def groupProblem(group: str) -> str | None:
    """Why C{group} cannot be a group name, or C{None} when it can."""
    if not _NAME.match(group) or group in (".", ".."):
        return f"the group name {group!r} may only hold letters, digits, '-', '_' and '.'"
    if len(group) > MAX_GROUP_LENGTH:
        return f"the group name {group[:20]!r}... is longer than {MAX_GROUP_LENGTH} characters"
    return None


def ipProblem(ip: str) -> str | None:
    """Why C{ip} cannot be an agent address, or C{None} when it can."""
    if ip == "any":
        return None
    if not _ADDRESS_CHARACTERS.match(ip):
        return (
            f"the agent address {ip!r} is not an IP address, a network such as "
            f"10.0.0.0/8, or 'any' (an IPv6 scope such as %eth0 is not allowed)"
        )
    try:
        if "/" in ip:
            ipaddress.ip_network(ip, strict=False)
        else:
            ipaddress.ip_address(ip)
    except ValueError:
        return (
            f"the agent address {ip!r} is not an IP address, a network such as "
            f"10.0.0.0/8, or 'any'"
        )
    return None


def _ipIdentity(ip: str) -> object:
    """
    What two addresses must share to collide: C{None} for C{any} (which
    never collides), else the normalised address or network, so that
    C{::1} and C{0::1} are the same address and a network only matches
    the same network.
    """
    if ip == "any":
        return None
    if "/" in ip:
        return ipaddress.ip_network(ip, strict=False)
    return ipaddress.ip_address(ip)


def ipsCollide(first: str, second: str) -> bool:
    """
    Whether two registered addresses are the same in Wazuh's sense: C{any}
    never is, an address is the same address, and a network only the same
    network.
    """
    a, b = _ipIdentity(first), _ipIdentity(second)
    return a is not None and a == b


@frozen
class AgentKey:
    """One agent of the registry: what Wazuh needs to accept its messages."""

    id: str
    name: str
    ip: str
    key: str

    def __attrs_post_init__(self) -> None:
        # A field with a space or a line break would write other agents'
        # lines into client.keys: refused whatever checked it before.
        for field in (self.id, self.name, self.ip, self.key):
            if not field or not field.isprintable() or any(c.isspace() for c in field):
                raise ValueError(f"an agent field may not be empty or hold spaces or line breaks: {field!r}")

    def line(self, removed: bool = False) -> bytes:
        """The agent's client.keys line, marked with C{!} when C{removed}."""
        mark = "!" if removed else ""
        return f"{self.id} {mark}{self.name} {self.ip} {self.key}\n".encode("ascii")

    def exported(self) -> str:
        """
        The key an operator pastes into the agent, as Wazuh's
        C{manage_agents} prints it: base64 of C{ID NAME IP KEY}.
        """
        return base64.b64encode(self.line().rstrip(b"\n")).decode("ascii")


class LineKind(enum.Enum):
    """What one line of a client.keys is."""

    AGENT = "agent"
    REMOVED = "removed"
    COMMENT = "comment"
    BLANK = "blank"
    MALFORMED = "malformed"


@frozen
class KeysLine:
    """
    One line of a client.keys: its exact bytes (line ending included), what
    it is, the agent it names (for agents and removed agents) and, for a
    malformed line, why.
    """

    number: int
    raw: bytes
    kind: LineKind
    agent: AgentKey | None = None
    problem: str | None = None
    #: The integer of the first field when it is an ID, even on a malformed
    #: line: new IDs are allocated above it so that none is ever reused.
    seenID: int | None = None


def _parseLine(number: int, raw: bytes, seen: dict[str, int]) -> KeysLine:
    """Classify one line; C{seen} maps the IDs of earlier agents to their lines."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Its ID still counts as used, so that nextID() never gives it again.
        found = _RAW_ID.match(raw)
        return KeysLine(
            number, raw, LineKind.MALFORMED, problem="it is not UTF-8 text",
            seenID=int(found.group(1)) if found else None,
        )
    stripped = text.strip()
    if not stripped:
        return KeysLine(number, raw, LineKind.BLANK)
    if stripped.startswith("#"):
        return KeysLine(number, raw, LineKind.COMMENT)
    fields = stripped.split()
    seenID = int(fields[0]) if _ID.match(fields[0]) else None

    def malformed(problem: str) -> KeysLine:
        return KeysLine(number, raw, LineKind.MALFORMED, problem=problem, seenID=seenID)

    if len(fields) != 4:
        return malformed(f"it has {len(fields)} fields instead of 4 (ID NAME IP KEY)")
    agentID, name, ip, key = fields
    if seenID is None:
        return malformed(f"the ID {agentID[:20]!r} is not a number of three to nine digits")
    if agentID == MANAGER_ID:
        return malformed(f"the ID {MANAGER_ID} is reserved for the manager")
    removed = name.startswith("!")
    if removed:
        name = name[1:]
    problem = nameProblem(name) or ipProblem(ip)
    if problem is None and not _KEY.match(key):
        problem = "the key is not 64 hexadecimal characters"
    if problem is not None:
        return malformed(problem)
    agent = AgentKey(agentID, name, ip, key)
    if removed:
        return KeysLine(number, raw, LineKind.REMOVED, agent=agent, seenID=seenID)
    if agentID in seen:
        return malformed(f"the ID {agentID} is already given to the agent of line {seen[agentID]}")
    seen[agentID] = number
    return KeysLine(number, raw, LineKind.AGENT, agent=agent, seenID=seenID)


@frozen
class ClientKeys:
    """
    A whole client.keys, line by line, and the agents it registers.

    Instances are immutable: L{withAgent} and L{withoutAgent} return the
    registry after a change, and L{serialise} gives its bytes, equal to the
    bytes parsed except for the lines of the agents changed.
    """

    lines: tuple[KeysLine, ...] = ()
    source: str = "client.keys"

    @property
    def agents(self) -> tuple[AgentKey, ...]:
        """The registered agents, in file order."""
        return tuple(
            line.agent for line in self.lines if line.kind is LineKind.AGENT and line.agent
        )

    @property
    def removedAgents(self) -> tuple[AgentKey, ...]:
        """The agents marked removed (C{!}), in file order."""
        return tuple(
            line.agent for line in self.lines if line.kind is LineKind.REMOVED and line.agent
        )

    @property
    def warnings(self) -> list[str]:
        """One sentence per malformed line, for the caller to log."""
        return [
            f"{self.source}:{line.number}: {line.problem}; the line is skipped and "
            f"left as it is: fix or remove it"
            for line in self.lines
            if line.kind is LineKind.MALFORMED
        ]

    def agent(self, agentID: str) -> AgentKey | None:
        """The registered agent with ID C{agentID}, if any."""
        for agent in self.agents:
            if agent.id == agentID:
                return agent
        return None

    def nextID(self) -> str:
        """
        The ID for a new agent: above every ID the file ever held, removed
        and malformed lines included, so that an old agent's ID (and what
        other nodes still keep under it) is never given to a new one.
        """
        seen = [line.seenID for line in self.lines if line.seenID is not None]
        return formatID(max(seen, default=0) + 1)

    def conflicts(self, name: str, ip: str) -> tuple[AgentKey, ...]:
        """The registered agents that already use C{name} or the address C{ip}."""
        return tuple(
            agent
            for agent in self.agents
            if agent.name == name or ipsCollide(agent.ip, ip)
        )

    def withAgent(self, agent: AgentKey) -> "ClientKeys":
        """This registry with C{agent} added as the last line."""
        lines = list(self.lines)
        if lines and not lines[-1].raw.endswith(b"\n"):
            # The last line had no line ending; it needs one before another line.
            lines[-1] = evolve(lines[-1], raw=lines[-1].raw + b"\n")
        number = len(lines) + 1
        lines.append(
            KeysLine(number, agent.line(), LineKind.AGENT, agent=agent, seenID=int(agent.id))
        )
        return evolve(self, lines=tuple(lines))

    def withoutAgent(self, agentID: str) -> "ClientKeys":
        """
        This registry with agent C{agentID} marked removed (C{ID !NAME IP
        KEY}), as Wazuh does, so that its ID is never allocated again.
        Raises L{KeyError} if no such agent is registered.
        """
        for index, line in enumerate(self.lines):
            if line.kind is LineKind.AGENT and line.agent and line.agent.id == agentID:
                removed = evolve(line, raw=line.agent.line(removed=True), kind=LineKind.REMOVED)
                return evolve(self, lines=self.lines[:index] + (removed,) + self.lines[index + 1 :])
        raise KeyError(agentID)

    def serialise(self) -> bytes:
        """The file's bytes."""
        return b"".join(line.raw for line in self.lines)


def parseClientKeys(data: bytes, source: str = "client.keys") -> ClientKeys:
    """
    Parse the bytes of a client.keys.  Never fails: a line that is not an
    agent, a removed agent, a comment or a blank is kept as malformed, and
    reported in L{ClientKeys.warnings} with C{source} and its line number.
    """
    seen: dict[str, int] = {}
    lines = tuple(
        _parseLine(number, raw, seen)
        for number, raw in enumerate(io.BytesIO(data).readlines(), start=1)
    )
    return ClientKeys(lines, source)


def readClientKeys(path: str) -> ClientKeys:
    """The client.keys at C{path}; an empty registry if there is no such file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    return parseClientKeys(data, path)


def knownAgentIDs(path: str) -> frozenset[str]:
    """
    The IDs of the agents registered in the client.keys at C{path} (none if
    the file is missing).  Malformed lines are skipped, not fatal.
    """
    return frozenset(agent.id for agent in readClientKeys(path).agents)
