"""
The master's side of agent info: the statuses workers send, and the list of
agents with their status and node.

Each worker streams the statuses of the agents that report to it (an
C{agent-info} stream: a bundle, as integrity uses, of C{NAME-IP} files with
their modification times).  The master takes each status only if:

 - its name is the name of a status file (C{NAME-IP}), it is at most
   L{MAX_STATUS_SIZE} bytes, and it is not a deletion: anything else is
   refused and logged;
 - the agent is registered in the master's client.keys: statuses of unknown
   agents are dropped, logged at debug level (an agent just removed whose
   worker has not synchronised yet is the common case);
 - it is not older than the master's copy: a worker that lost an agent to
   another (a load balancer rebalanced it) keeps sending its last status,
   which must not win over the newer one;
 - it is not dated later than the master's clock plus
   C{cluster.agent_info_max_skew}: a status from the future would keep its
   agent Active for ever and make every real status look older.  Such
   statuses are refused and counted, and one line names the worker.  A copy
   already on the master dated that far ahead (written before this check)
   loses to any status that passes it.

A status taken is written to the master's C{queue/agent-info/} with the
received modification time, and the agent is recorded as reporting to that
worker (L{ReportingNodes}).  Statuses are applied one worker's batch at a
time, in a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from fractions import Fraction
from typing import Any, Callable, Sequence

from attrs import asdict, define
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ..agents.agentinfo import AGENT_INFO_FOLDER, MAX_STATUS_SIZE, parseStatusFileName
from ..agents.clientkeys import readClientKeys
from ..agents.registry import AgentRegistry
from ..agents.statuscounts import StatusCounts
from ..agents.status import AgentRecord, AgentState, RegisteredAgents, ReportingNodes, activeByNode, listAgents
from ..files import writeFileAtomically
from ..home import WazuhHome
from ..internal_options import InternalOptions
from ..metrics.registry import AGENT_COUNTS_RESYNC
from ..protocol.agentcommands import ListAgents, RegistryRefused
from ..protocol.stream import SinkFactory, StreamRefused
from ..stats import NodeStats
from ..sync.bundle import BundleReader, Limits
from ..sync.stager import ChecksumMismatch, showPath

#: The most compressed bytes of one agent-info stream.
MAX_AGENT_INFO_BYTES = 64 * 1024 * 1024

#: What one agent-info stream may hold, decompressed: statuses are kept in
#: memory until the stream is whole, so this bounds the memory one costs.
AGENT_INFO_LIMITS = Limits(
    maxFileSize=1024 * 1024, maxTotalBytes=64 * 1024 * 1024, maxRecords=200_000, maxPathBytes=512
)

#: Most bytes of text in one page of agents (a sealed message holds 64 KiB).
PAGE_BYTES = 40_000

#: Listings kept at once for clients reading page by page.
MAX_NAMED_LISTINGS = 16

#: How long later pages of an agent listing reuse the listing of its first page.
LISTING_REUSE_SECONDS = 60.0


@define
class AgentInfoStatus:
    """The last agent-info sync of one worker (times on the master's clock; 0 for never)."""

    running: bool = False
    date_start: float = 0.0
    date_end: float = 0.0
    total: int = 0
    last_error: str = ""


class StatusInbox:
    """
    Takes the records of an agent-info bundle from a L{BundleReader}, as a
    L{wazuhcluster.sync.stager.Stager} takes files, but keeps the statuses
    in memory: each is small, and none is written before the stream is whole.

    @ivar statuses: (file name, modification time, content) of each status
        received whole.
    @ivar refused: (repr of the name, reason) of each record refused.
    """

    def __init__(self, maxStatusSize: int = MAX_STATUS_SIZE) -> None:
        self.maxStatusSize = maxStatusSize
        self.statuses: list[tuple[str, float, bytes]] = []
        self.refused: list[tuple[str, str]] = []
        self._current: tuple[str, float, bytearray, Any] | None = None

    def begin(self, relpath: str, size: int, mtime: float) -> bool:
        if parseStatusFileName(relpath) is None:
            self.refused.append((repr(relpath[:200]), "not the name of an agent status file (NAME-IP)"))
            return False
        if size > self.maxStatusSize:
            self.refused.append(
                (repr(relpath), f"{size} bytes, over the limit of {self.maxStatusSize} for a status")
            )
            return False
        self._current = (relpath, mtime, bytearray(), hashlib.md5(usedforsecurity=False))
        return True

    def write(self, data: bytes | memoryview) -> None:
        assert self._current is not None
        self._current[2].extend(data)
        self._current[3].update(data)

    def end(self, md5: bytes) -> None:
        assert self._current is not None
        relpath, mtime, content, digest = self._current
        self._current = None
        if digest.digest() != md5:
            raise ChecksumMismatch(f"the status {showPath(relpath)} does not match its MD5 checksum", relpath)
        self.statuses.append((relpath, mtime, bytes(content)))

    def delete(self, relpath: str) -> bool:
        self.refused.append((repr(relpath[:200]), "a worker cannot delete statuses on the master"))
        return False

    @property
    def staged(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.statuses)

    @property
    def deleting(self) -> tuple[str, ...]:
        return ()

    def abort(self) -> None:
        self.statuses.clear()
        self._current = None


class _RegisteredAgents:
    """client.keys, parsed again only when the file changed (50,000 lines take 0.5 s)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int, int] | None = None
        self._agents = RegisteredAgents()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            identity = (0, 0, 0)
        if identity != self._identity:
            self._agents, self._identity = RegisteredAgents(readClientKeys(self.path).agents), identity

    def agents(self) -> RegisteredAgents:
        """The registered agents, in file order (blocking)."""
        self._refresh()
        return self._agents

    def statusNames(self) -> dict[str, str]:
        """The status file names of the registered agents, each mapped to itself (blocking)."""
        self._refresh()
        return self._agents.statusNames


class MasterAgentInfo(Service):
    """The statuses the workers send, and what the master knows of every agent."""

    log = Logger()
    logTag = "[Master] [Agent-info]"

    def __init__(
        self,
        home: WazuhHome,
        options: InternalOptions,
        clock: IReactorTime,
        masterName: str,
        isConnectedWorker: Callable[[Any], bool],
        runInThread: Callable[..., Deferred] = deferToThread,
    ) -> None:
        self.home = home
        self.options = options
        self.clock = clock
        self.masterName = masterName
        self.isConnectedWorker = isConnectedWorker
        self.runInThread = runInThread
        self.registry = AgentRegistry(home)
        self.nodes = ReportingNodes(home.path("queue", "cluster", "agent-nodes.json"))
        self.registered = _RegisteredAgents(self.registry.keysPath)
        self.statuses: dict[str, AgentInfoStatus] = {}
        #: The agents by status, for the metrics: made at the first scrape,
        #: then rebuilt from each listing.
        self.statusCounts: StatusCounts | None = None
        self._applying = DeferredLock()
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        #: The last listing without and with details, and when it was made.
        self._recent: dict[bool, tuple[float, list[AgentRecord]]] = {}
        #: Who waits for the listing being made, without and with details.
        self._making: dict[bool, list[Deferred[list[AgentRecord]]]] = {}
        #: Listings read page by page, by name, and when each was made.
        self._named: dict[str, tuple[float, list[AgentRecord]]] = {}
        #: The agents of a named listing that pass a client's filters.
        self._filtered: dict[tuple[str, frozenset[str], frozenset[str]], list[AgentRecord]] = {}

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.home.path(AGENT_INFO_FOLDER), mode=0o770, exist_ok=True)
        self.nodes.load()

    def stopService(self) -> None:
        super().stopService()
        try:
            self.nodes.save(self.clock.seconds(), staleFor=0)
        except OSError as e:
            self.log.warn("Could not save which node each agent reports to: {why}.", why=e)

    def statusOf(self, name: str) -> AgentInfoStatus:
        """The agent-info sync status of worker C{name}."""
        return self.statuses.setdefault(name, AgentInfoStatus())

    # Receiving statuses.

    def sinksFor(self, connection: Any) -> dict[str, tuple[SinkFactory, int]]:
        """The streams a worker's connection may send about agents."""
        return {"agent-info": (lambda info: self._statusSink(connection), MAX_AGENT_INFO_BYTES)}

    def _statusSink(self, connection: Any) -> "_StatusSink":
        if not self.isConnectedWorker(connection):
            self.log.warn(
                "Refused agent statuses from {peer}: it is not a connected worker.",
                peer=connection.peerName(),
            )
            raise StreamRefused("only a connected worker may send agent statuses")
        status = self.statusOf(connection.nodeName)
        status.running, status.date_start, status.last_error = True, self.clock.seconds(), ""
        return _StatusSink(self, connection.nodeName, status)

    async def apply(self, node: str, statuses: Sequence[tuple[str, float, bytes]]) -> dict[str, int]:
        """Take the statuses worker C{node} sent; returns what became of them."""
        await self._applying.acquire()
        try:
            now = self.clock.seconds()
            changes: list[tuple[str, float, bool]] = []
            counts = await self.runInThread(self._applyBlocking, node, statuses, now, changes)
            if self.statusCounts is not None:
                self.statusCounts.update(changes)
            return counts
        finally:
            self._applying.release()

    def _applyBlocking(
        self, node: str, statuses: Sequence[tuple[str, float, bytes]], now: float,
        changes: list[tuple[str, float, bool]] | None = None,
    ) -> dict[str, int]:
        """
        Write the statuses newer than the master's (blocking); each written
        is added to C{changes} as (file name, keep-alive, whether empty).
        """
        registered = self.registered.statusNames()
        folder = self.home.path(AGENT_INFO_FOLDER)
        counts = {"written": 0, "same": 0, "older": 0, "unknown": 0, "future": 0}
        unknown: list[str] = []
        future: list[str] = []
        latest = round(Fraction(now + self.options.agent_info_max_skew) * 1_000_000_000)
        for receivedName, mtime, content in statuses:
            # The registry's copy of the name: the record below keeps it.
            fileName = registered.get(receivedName)
            if fileName is None:
                counts["unknown"] += 1
                unknown.append(receivedName)
                continue
            path = os.path.join(folder, fileName)
            try:
                received = round(Fraction(mtime) * 1_000_000_000)
            except (ValueError, OverflowError):  # NaN or infinite: no date at all
                received = latest + 1
            if received > latest:
                counts["future"] += 1
                future.append(fileName)
                continue
            try:
                current: int | None = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                current = None
            if current is not None and current > latest:
                current = None  # a copy from the future, from before this check: any real status wins
            if current is not None and received < current:
                counts["older"] += 1
                continue
            if current is None or received > current:
                if current is not None and _sameContent(path, content):
                    # A keep-alive mostly repeats the last one: only its time
                    # moves, and a new file would cost far more (bench/agents.py).
                    os.utime(path, ns=(received, received))
                else:
                    writeFileAtomically(path, content, 0o660, durable=False, mtimeNs=received)
                counts["written"] += 1
                if changes is not None:
                    changes.append((fileName, received / 1e9, not content))
            else:
                counts["same"] += 1
            self.nodes.record(fileName, node, received)
        self.nodes.save(now)
        if future:
            self.log.warn(
                "Refused {n} agent statuses from worker {node} dated more than {skew:.0f} seconds"
                " after the master's clock (cluster.agent_info_max_skew; first: {first}):"
                " check the worker's clock.",
                n=len(future), node=node, skew=self.options.agent_info_max_skew,
                first=", ".join(future[:5]),
            )
        if unknown:
            self.log.debug(
                "Dropped {n} statuses of agents not registered on the master from worker {node}"
                " (first: {first}).",
                n=len(unknown), node=node, first=", ".join(unknown[:5]),
            )
        return counts

    # When the registry changes.

    def registryChanged(self) -> Deferred[None]:
        """client.keys changed: forget removed agents, remove their files, report bad lines."""

        if self.statusCounts is not None:
            self.statusCounts.invalidate()

        def clean() -> tuple[list[str], list[str]]:
            removed, warnings = self.registry.removeFilesOfUnregistered()
            self.nodes.keepOnly(self.registered.statusNames())
            self.nodes.save(self.clock.seconds())
            return removed, warnings

        def done(result: tuple[list[str], list[str]]) -> None:
            removed, warnings = result
            for warning in warnings[:20]:
                self.log.warn("{problem}", problem=warning)
            if removed:
                self.log.info(
                    "Removed {n} group and status files of agents no longer registered.", n=len(removed)
                )

        return self.runInThread(clean).addCallbacks(
            done, lambda f: self.log.failure("Could not remove the files of removed agents", f)
        )

    # What the master knows of every agent.

    async def listing(self, maxAge: float = 0.0, details: bool = False) -> list[AgentRecord]:
        """
        Every agent with its status and node; reuses a listing younger than
        C{maxAge} (one with details serves a request without).
        """
        now = self.clock.seconds()
        for kind in ((True, False) if not details else (True,)):
            cached = self._recent.get(kind)
            if cached is not None and maxAge > 0 and now - cached[0] <= maxAge:
                return cached[1]
        # Requests that come while a listing is being made wait for it rather
        # than make their own: a burst of clients costs one listing, in time
        # and in memory.
        waiter: Deferred[list[AgentRecord]] = Deferred()
        waiting = self._making.get(details)
        if waiting is not None:
            waiting.append(waiter)
            return await waiter
        self._making[details] = waiting = [waiter]

        def made(records: list[AgentRecord]) -> None:
            self._recent[details] = (now, records)
            counts = self.statusCounts
            if counts is not None and (counts.builtAt is None or counts.builtAt <= now):
                counts.rebuild(records, now)
            for w in self._making.pop(details, []):
                w.callback(records)

        def failed(failure: Any) -> None:
            for w in self._making.pop(details, []):
                w.errback(failure)

        self.runInThread(
            listAgents, self.home.root, self.nodes, self.masterName, now,
            self.options.agent_disconnection_time, details, self.registered.agents,
        ).addCallbacks(made, failed)
        return await waiter

    async def _namedListing(self, name: str, details: bool) -> tuple[str, list[AgentRecord]]:
        """The listing called C{name}, while it is kept; else a fresh one, with its new name."""
        now = self.clock.seconds()
        for old in [n for n, (made, _) in self._named.items() if now - made > LISTING_REUSE_SECONDS]:
            del self._named[old]
        if name in self._named:
            return name, self._named[name][1]
        records = await self.listing(0.0, details)
        name = secrets.token_hex(8)
        self._named[name] = (now, records)
        while len(self._named) > MAX_NAMED_LISTINGS:
            del self._named[next(iter(self._named))]
        return name, records

    async def agentsPage(
        self, offset: int, limit: int, statuses: Sequence[str], nodes: Sequence[str], details: bool = False,
        listing: str = "",
    ) -> dict[str, Any]:
        """
        A page of L{ListAgents}: at most its page size, and at most
        L{PAGE_BYTES} of text, from the listing named C{listing} (or a
        fresh one).
        """
        try:
            wanted = {AgentState.parse(s).value for s in statuses}
        except ValueError as e:
            raise RegistryRefused(str(e)) from None
        name, records = await self._namedListing(listing, details)
        key = (name, frozenset(wanted), frozenset(nodes))
        chosen = self._filtered.get(key)
        if chosen is None:
            # Filtered once per listing and filters, not once per page: 600
            # pages of 50,000 agents made the listing quadratic.
            chosen = [
                r for r in records
                if (not wanted or r.status in wanted) and (not nodes or r.node in nodes)
            ]
            self._filtered = {k: v for k, v in self._filtered.items() if k[0] in self._named}
            self._filtered[key] = chosen
        page: list[dict[str, Any]] = []
        size = 0
        for record in chosen[max(offset, 0) : max(offset, 0) + min(max(limit, 0), ListAgents.pageSize)]:
            box = _box(record)
            size += sum(len(str(v)) + 24 for v in box.values())
            if page and size > PAGE_BYTES:
                break
            page.append(box)
        if offset <= 0 and len(page) == len(chosen):
            self._named.pop(name, None)  # one page: nothing to keep for later pages
            name = ""
        return {"agents": page, "total": len(chosen), "listing": name}

    async def countForMetrics(self) -> None:
        """
        Give the node's metrics the agents by status (L{StatusCounts}),
        after a full listing when the counts were last rebuilt more than
        L{AGENT_COUNTS_RESYNC} seconds ago, or the registry changed since.
        """
        if self.statusCounts is None:
            self.statusCounts = StatusCounts(self.options.agent_disconnection_time)
        counts = self.statusCounts
        if counts.builtAt is None or self.clock.seconds() - counts.builtAt > AGENT_COUNTS_RESYNC:
            await self.listing()
        self.stats.metrics.countAgents(counts.counts(self.clock.seconds()))

    async def activeAgents(self) -> dict[str, int]:
        """How many agents are active on each node, from a listing at most a few seconds old."""
        return activeByNode(await self.listing(maxAge=2.0))


def _sameContent(path: str, content: bytes) -> bool:
    """Whether the file at C{path} holds exactly C{content} (blocking)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(content) + 1) == content
    except OSError:
        return False


def _box(record: AgentRecord) -> dict[str, Any]:
    return asdict(record)


class _StatusSink:
    """One worker's statuses arriving: decoded as they come (in a thread), applied at the end."""

    log = Logger()

    def __init__(self, master: MasterAgentInfo, node: str, status: AgentInfoStatus) -> None:
        self.master = master
        self.node = node
        self.status = status
        self.inbox = StatusInbox()
        self.reader = BundleReader(self.inbox, AGENT_INFO_LIMITS)
        self.logTag = f"[Worker {node}] [Agent-info]"

    def feed(self, data: bytes) -> Deferred[None]:
        return self.master.runInThread(self.reader.feed, data)

    def close(self) -> Deferred[str]:
        async def close() -> str:
            try:
                self.reader.finish()
                for name, reason in self.inbox.refused[:20]:
                    self.log.warn("Refused a status from worker {node}: {name}: {reason}.",
                                  node=self.node, name=name, reason=reason)
                counts = await self.master.apply(self.node, self.inbox.statuses)
            except BaseException as e:
                self._failed(str(e) or type(e).__name__)
                raise
            self.master.stats.count("agentinfo_syncs")
            self.master.stats.count("agentinfo_statuses_received", counts["written"] + counts["same"])
            self.master.stats.metrics.agentInfoUpdates.labels(worker=self.node).inc(counts["written"] + counts["same"])
            status = self.status
            status.running, status.date_end = False, self.master.clock.seconds()
            status.total = len(self.inbox.statuses)
            self.log.debug(
                "Agent statuses from worker {node}: {written} written, {same} unchanged,"
                " {older} older than the master's, {unknown} of unknown agents,"
                " {future} dated in the future.",
                node=self.node, **counts,
            )
            return json.dumps({**counts, "refused": len(self.inbox.refused)})

        return Deferred.fromCoroutine(close())

    def abort(self, reason: str) -> None:
        self.inbox.abort()
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.master.stats.count("errors")
        self.status.running = False
        self.status.last_error = reason
