"""
The worker's side of agent info: send the master the statuses of the agents
that report to this worker.

Every C{sync_agent_info} seconds the worker lists C{queue/agent-info/} (in a
thread) and sends, in one C{agent-info} stream, the status files whose
modification time or size changed since the master last acknowledged them;
nothing when nothing changed.  A status that changes while it is read is
left for the next cycle (the bundle writer sends only stable snapshots).
On a new connection to the master everything is sent once again: the
master may have been restarted, or replaced, and it drops at little cost
what it already has.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ..agents.agentinfo import AGENT_INFO_FOLDER, parseStatusFileName
from ..home import WazuhHome
from ..internal_options import InternalOptions
from ..stats import NodeStats
from ..sync.bundle import BundleWriter
from ..sync.transfer import jsonObject

#: What identifies one version of a status file: modification time (ns) and size.
Version = tuple[int, int]


class WorkerAgentInfo(Service):
    """The worker's agent-info cycle."""

    log = Logger()

    def __init__(
        self,
        home: WazuhHome,
        options: InternalOptions,
        clock: IReactorTime,
        nodeName: str,
        runInThread: Callable[..., Deferred] = deferToThread,
    ) -> None:
        self.home = home
        self.options = options
        self.clock = clock
        self.runInThread = runInThread
        self.logTag = f"[Worker {nodeName}] [Agent-info]"
        self.folder = home.path(AGENT_INFO_FOLDER)
        #: Where the connection to the master comes from (set by the builder).
        self.connectionToMaster: Callable[[], Any] = lambda: None
        self.sending = False
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        self._acknowledged: dict[str, Version] = {}
        self._acknowledgedBy: Any = None
        self._loop = LoopingCall(self._cycle)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.options.sync_agent_info, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _cycle(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.sync()).addErrback(
            lambda f: self.log.failure("Agent-info cycle failed", f)
        )

    def _changed(self) -> list[tuple[str, str, Version]]:
        """The status files that changed since acknowledged (blocking)."""
        changed = []
        present = set()
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if parseStatusFileName(entry.name) is None:
                        continue
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    present.add(entry.name)
                    version = (st.st_mtime_ns, st.st_size)
                    if self._acknowledged.get(entry.name) != version:
                        changed.append((entry.name, entry.path, version))
        except FileNotFoundError:
            pass
        for gone in [name for name in self._acknowledged if name not in present]:
            del self._acknowledged[gone]
        return changed

    async def sync(self) -> int:
        """One agent-info cycle, if connected and none is running; how many statuses were sent."""
        connection = self.connectionToMaster()
        if connection is None or not connection.joined or self.sending:
            return 0
        self.sending = True
        pieces = None
        try:
            if connection is not self._acknowledgedBy:
                self._acknowledged, self._acknowledgedBy = {}, connection
            started = self.clock.seconds()
            changed = await self.runInThread(self._changed)
            if not changed:
                self.log.debug("No agent status changed since the last cycle; nothing sent.")
                return 0
            writer = BundleWriter([(name, path) for name, path, _ in changed], [])
            pieces = writer.chunks()
            answer = jsonObject(
                await connection.streams.send(
                    "agent-info",
                    json.dumps({"statuses": len(changed)}),
                    lambda: self.runInThread(next, pieces, None),
                    timeout=self.options.timeout_receiving_file,
                )
            )
            sent = set(writer.sent)
            self.stats.count("agentinfo_syncs")
            self.stats.count("agentinfo_statuses_sent", len(sent))
            self.stats.count("agentinfo_bytes_sent", writer.bytesOut)
            for name, _, version in changed:
                if name in sent:
                    self._acknowledged[name] = version
            self.log.info(
                "Sent {n} agent statuses ({bytes} bytes compressed) to the master in {t:.3f} s"
                " ({written} taken, {older} older than the master's, {unknown} of agents not"
                " registered there).",
                n=len(sent), bytes=writer.bytesOut, t=self.clock.seconds() - started,
                written=answer.get("written", 0) + answer.get("same", 0),
                older=answer.get("older", 0), unknown=answer.get("unknown", 0),
            )
            return len(sent)
        except Exception as e:
            self.stats.count("errors")
            self.log.warn(
                "Could not send agent statuses to the master: {why}; retrying in {n} seconds.",
                why=str(e) or type(e).__name__, n=self.options.sync_agent_info,
            )
            return 0
        finally:
            if pieces is not None:
                pieces.close()
            self.sending = False
