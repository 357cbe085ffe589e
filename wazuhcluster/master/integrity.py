"""
The master's side of integrity: its file manifest, and each worker's sync.

Every C{recalculate_integrity} seconds (and at once when inotify sees a
synchronised folder change) the master rescans the table in a thread,
re-hashing only files whose size, mtime, inode or ctime moved.  When the
manifest changed, it tells the connected workers, which then sync at once
instead of waiting for their next cycle.

A worker's sync: the worker streams its manifest; the master compares it
with its own, records the counts, answers with them, and then streams the
worker one compressed bundle of the missing and different files plus the
list of files to delete.  Files under an "extra valid" rule that only the
worker has (agent group assignments of agents that started reporting to
it) are asked for, and kept only for agents the master knows.  One sync at
a time per worker; any failure is logged and the next cycle retries.
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
from twisted.python.filepath import FilePath

from ..agents.clientkeys import knownAgentIDs
from ..home import WazuhHome
from ..internal_options import InternalOptions
from ..protocol.mastercommands import IntegrityChanged
from ..protocol.stream import SinkFactory, chunksOf
from ..stats import NodeStats
from ..sync.bundle import BundleWriter, Limits
from ..sync.compare import Comparison, compare
from ..sync.manifest import FileEntry, ManifestDecoder
from ..sync.scan import IntegrityScanner, ScanResult
from ..sync.stager import Stager
from ..sync.status import IntegrityStatus
from ..sync.table import SyncTable, UnsafePath
from ..sync.transfer import MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES, BundleSink, jsonObject, pathLines

RunInThread = Callable[..., Deferred]

#: What a worker's group files may weigh: a group assignment is one line of
#: group names (a few KiB with many groups), so a bomb stops here.
EXTRA_VALID_LIMITS = Limits(maxFileSize=64 * 1024, maxTotalBytes=256 * 1024 * 1024, maxPathBytes=512)

#: The registry, as the table names it.
CLIENT_KEYS = "etc/client.keys"


class MasterIntegrity(Service):
    """The master's manifest and the integrity syncs of its workers."""

    log = Logger()
    logTag = "[Master] [Integrity]"

    def __init__(
        self,
        home: WazuhHome,
        table: SyncTable,
        options: InternalOptions,
        clock: IReactorTime,
        workers: Callable[[], dict[str, Any]],
        runInThread: RunInThread = deferToThread,
        watch: bool = True,
    ) -> None:
        """
        @param workers: the joined workers' connections by name (the fleet's).
        @param watch: whether to watch the folders with inotify (Linux).
        """
        self.home = home
        self.table = table
        self.options = options
        self.clock = clock
        self.workers = workers
        self.runInThread = runInThread
        self.watch = watch
        self.scanner = IntegrityScanner(home.root, table)
        self.current: ScanResult | None = None
        self.statuses: dict[str, IntegrityStatus] = {}
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        #: Called when a scan finds client.keys changed (and after the first scan).
        self.onClientKeysChanged: Callable[[], object] | None = None
        self._scanning: list[Deferred] | None = None
        self._loop = LoopingCall(self._cycle)
        self._loop.clock = clock
        self._notifier: Any = None
        self._pendingRescan: Any = None

    def startService(self) -> None:
        super().startService()
        for folder in self.table.folders():
            os.makedirs(self.home.path(folder), mode=0o770, exist_ok=True)
        self._loop.start(self.options.recalculate_integrity, now=True)
        if self.watch:
            self._startWatching()

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._pendingRescan is not None and self._pendingRescan.active():
            self._pendingRescan.cancel()

    def statusOf(self, name: str) -> IntegrityStatus:
        """The sync status of worker C{name} (a fresh one for a new worker)."""
        return self.statuses.setdefault(name, IntegrityStatus())

    # The master's manifest.

    def _cycle(self) -> Deferred:
        return self.recalculate().addErrback(
            lambda f: self.log.failure("Could not compute the integrity of the master's files", f)
        )

    def recalculate(self) -> Deferred[ScanResult]:
        """
        Scan now (in a thread), or join the scan already running; fires with
        the result.  Workers are told when the files changed.
        """
        waiter: Deferred[ScanResult] = Deferred()
        if self._scanning is not None:
            self._scanning.append(waiter)
            return waiter
        self._scanning = [waiter]
        started = self.clock.seconds()

        def done(result: ScanResult) -> None:
            waiters, self._scanning = self._scanning or [], None
            previous, self.current = self.current, result
            seconds = self.clock.seconds() - started
            self.log.debug(
                "Integrity computed: {n} files, {hashed} hashed, {reused} unchanged, in {t:.3f} s.",
                n=len(result.files),
                hashed=result.hashed,
                reused=result.reused,
                t=seconds,
            )
            if previous is None or (previous.unreadable, previous.refused) != (result.unreadable, result.refused):
                for path in sorted(result.unreadable)[:20]:
                    self.log.error("Cannot read {path}: it is not synchronised until it can be read.", path=path)
                for path in sorted(result.refused)[:20]:
                    self.log.error("Skipped {path}: {why}.", path=path,
                                   why="not a UTF-8 name, or a folder that links outside the home")
            if previous is not None and previous.files != result.files:
                self._notifyWorkers()
            if self.onClientKeysChanged is not None and (
                previous is None or previous.files.get(CLIENT_KEYS) != result.files.get(CLIENT_KEYS)
            ):
                self.onClientKeysChanged()
            for w in waiters:
                w.callback(result)

        def failed(failure: Any) -> None:
            waiters, self._scanning = self._scanning or [], None
            for w in waiters:
                w.errback(failure)

        self.runInThread(self.scanner.scan).addCallbacks(done, failed)
        return waiter

    def _notifyWorkers(self) -> None:
        for connection in list(self.workers().values()):
            try:
                connection.callRemote(IntegrityChanged)
            except Exception:
                pass  # a connection closing right now: it resyncs when it rejoins

    def _startWatching(self) -> None:
        try:
            from twisted.internet import inotify
        except ImportError:
            self.log.info("inotify is not available: changes are found every {n} seconds.",
                          n=self.options.recalculate_integrity)
            return
        # Twisted's recursive watch visits every file of the tree (seconds
        # with 50,000 group files, on the reactor): list the folders in a
        # thread, then watch each folder alone, new sub-folders added as
        # they appear.
        self.runInThread(self._foldersToWatch).addCallback(self._watch, inotify).addErrback(
            lambda f: self.log.failure("Could not watch the synchronised folders", f)
        )

    def _foldersToWatch(self) -> list[tuple[str, bool]]:
        """Each folder to watch, and whether new sub-folders are watched too (blocking)."""
        folders = []
        for rule in self.table.rules:
            top = self.home.path(rule.folder)
            if not rule.recursive:
                folders.append((top, False))
                continue
            for folder, subfolders, _ in os.walk(top):
                folders.append((folder, True))
        return folders

    def _watch(self, folders: list[tuple[str, bool]], inotify: Any) -> None:
        if not self.running:
            return
        notifier = inotify.INotify()
        mask = (
            inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM
            | inotify.IN_DELETE | inotify.IN_CREATE | inotify.IN_ATTRIB
        )
        try:
            notifier.startReading()
            for folder, autoAdd in folders:
                notifier.watch(FilePath(folder), mask=mask, autoAdd=autoAdd, callbacks=[self._changed])
        except OSError as e:  # e.g. the per-user limit of inotify watches
            notifier.loseConnection()
            self.log.warn(
                "Cannot watch the synchronised folders ({why}): changes are found every {n} seconds.",
                why=e, n=self.options.recalculate_integrity,
            )
            return
        self._notifier = notifier

    def _changed(self, watch: object, path: object, mask: int) -> None:
        # Changes come in bursts (a file written, then renamed): rescan once, shortly.
        if self._pendingRescan is None or not self._pendingRescan.active():
            self._pendingRescan = self.clock.callLater(0.1, self._cycle)

    # A worker's sync.

    def sinksFor(self, connection: Any) -> dict[str, tuple[SinkFactory, int]]:
        """The streams a worker's connection may send to the master."""
        return {
            "integrity-manifest": (lambda info: _ManifestSink(self, connection), MAX_MANIFEST_BYTES),
            "extra-valid": (lambda info: self._extraValidSink(connection), MAX_BUNDLE_BYTES),
        }

    async def workerManifest(self, connection: Any, files: dict[str, FileEntry]) -> str:
        """
        Compare a worker's manifest with the master's, start the transfer it
        needs, and return the counts for the worker.
        """
        name = connection.nodeName
        status = self.statusOf(name)
        if status.running:
            return json.dumps({"busy": True})
        status.running, status.date_start, status.last_error = True, self.clock.seconds(), ""
        try:
            current = self.current if self.current is not None else await self.recalculate()
            # Tens of thousands of entries: compared in a thread, like the hashing.
            comparison = await self.runInThread(compare, current.files, files, self.table, current.unstable)
        except BaseException:
            status.running = False
            raise
        status.missing, status.shared = len(comparison.missing), len(comparison.shared)
        status.extra, status.extra_valid = len(comparison.extra), len(comparison.extra_valid)
        for path in comparison.refused[:10]:
            self.log.warn(
                "Worker {name} listed a path outside the synchronised folders: {path!r}; ignored.",
                name=name,
                path=path,
            )
        transfer = bool(comparison.missing or comparison.shared or comparison.extra)
        answer = {
            "in_sync": comparison.inSync,
            "missing": status.missing,
            "shared": status.shared,
            "extra": status.extra,
            "extra_valid": status.extra_valid,
            "transfer": transfer,
        }
        if comparison.inSync:
            status.running, status.date_end = False, self.clock.seconds()
            self.stats.count("integrity_syncs")
        else:
            Deferred.fromCoroutine(self._transfer(connection, status, comparison))
        return json.dumps(answer)

    async def _transfer(self, connection: Any, status: IntegrityStatus, comparison: Comparison) -> None:
        name = connection.nodeName
        try:
            if comparison.missing or comparison.shared or comparison.extra:
                sending = comparison.missing + comparison.shared
                writer = BundleWriter(
                    # A generator: the writer walks it in its thread, not on the reactor.
                    ((p, self.home.path(p)) for p in sending),
                    comparison.extra,
                    spoolFolder=self.home.path("queue", "cluster"),
                    # Level 1: four times faster than 6 for 2% larger bundles
                    # (bench/integrity.py); the link is rarely the bottleneck.
                    level=1,
                )
                pieces = writer.chunks()
                try:
                    answer = await connection.streams.send(
                        "integrity-bundle",
                        json.dumps({"files": len(sending), "deletions": len(comparison.extra)}),
                        lambda: self.runInThread(next, pieces, None),
                        timeout=self.options.timeout_receiving_file,
                    )
                finally:
                    pieces.close()
                result = jsonObject(answer)
                self.stats.count("integrity_files_sent", len(writer.sent))
                self.stats.count("integrity_bytes_sent", writer.bytesOut)
                for path, reason in writer.failed[:20]:
                    self.log.error("Could not send {path} to worker {name}: {reason}.",
                                   path=path, name=name, reason=reason)
                self.log.info(
                    "Integrity sync with worker {name}: {sent} files sent ({bytes} bytes compressed),"
                    " {deleted} deleted on the worker{skipped}.",
                    name=name,
                    sent=len(writer.sent),
                    bytes=writer.bytesOut,
                    deleted=result.get("deleted", 0),
                    skipped=(
                        f"; {len(writer.skipped)} changed while being read and are retried next cycle"
                        if writer.skipped
                        else ""
                    ),
                )
            # Only the group files of agents the master knows are worth asking
            # for: the others would be refused, every cycle.
            wanted = await self.runInThread(self._knownAgentsOnly, comparison.extra_valid)
            if wanted:
                await connection.streams.send(
                    "integrity-request",
                    "extra-valid",
                    chunksOf(pathLines(wanted)),
                    timeout=self.options.timeout_receiving_file,
                )
            status.date_end = self.clock.seconds()
            self.stats.count("integrity_syncs")
        except Exception as e:
            self.stats.count("errors")
            status.last_error = str(e) or type(e).__name__
            self.log.warn(
                "Integrity sync with worker {name} failed: {why}; it is retried next cycle.",
                name=name,
                why=status.last_error,
            )
        finally:
            status.running = False

    def _knownAgentsOnly(self, paths: tuple[str, ...]) -> list[str]:
        """The extra-valid paths that name an agent registered here (blocking)."""
        if not paths:
            return []
        known = knownAgentIDs(self.home.path("etc", "client.keys"))
        return [p for p in paths if os.path.basename(p) in known]

    def _extraValidSink(self, connection: Any) -> BundleSink:
        """Group assignments a worker sends: kept only for agents the master knows."""
        status = self.statusOf(connection.nodeName)
        status.agentgroups_running, status.agentgroups_start = True, self.clock.seconds()
        known: list[frozenset[str]] = []

        def resolve(relpath: str) -> tuple[str, int, str | None]:
            # Runs in the staging thread: client.keys is read there, once.
            target, rule = self.table.resolve(self.home.root, relpath)
            if not rule.extra_valid:
                raise UnsafePath(f"{relpath!r} is not a file a worker may send")
            if not known:
                known.append(knownAgentIDs(self.home.path("etc", "client.keys")))
            if os.path.basename(relpath) not in known[0]:
                raise UnsafePath(f"agent {os.path.basename(relpath)!r} is not registered on the master")
            return target, rule.mode, None

        def finished(result: dict[str, Any] | None, error: str | None) -> None:
            status.agentgroups_running = False
            if result is not None:
                status.agentgroups_end = self.clock.seconds()
                status.agentgroups_total = result["written"]
                self.stats.count("integrity_files_received", result["written"])
                self.stats.count("integrity_bytes_received", result["bytes"])
            else:
                self.stats.count("errors")

        return BundleSink(
            _NoDeletions(resolve, UnsafePath), self.runInThread, f"worker {connection.nodeName}", finished,
            logTag=f"[Worker {connection.nodeName}] [Agent-groups recv]", limits=EXTRA_VALID_LIMITS,
        )


class _NoDeletions(Stager):
    """A stager for what a worker sends: files only, never a deletion on the master."""

    def delete(self, relpath: str) -> bool:
        self.refused.append((repr(relpath[:200]), "a worker cannot delete files on the master"))
        return False


class _ManifestSink:
    """A worker's manifest arriving: decoded as it comes, compared at the end."""

    def __init__(self, master: MasterIntegrity, connection: Any) -> None:
        self.master = master
        self.connection = connection
        self.decoder = ManifestDecoder()

    def feed(self, data: bytes) -> None:
        self.decoder.feed(data)

    def close(self) -> Deferred[str]:
        return Deferred.fromCoroutine(self.master.workerManifest(self.connection, self.decoder.finish()))

    def abort(self, reason: str) -> None:
        pass

