"""
The worker's side of integrity: check its files against the master's, take
what differs.

As soon as it joins the master, then about every C{sync_integrity} seconds
(give or take a tenth, so that workers do not stay in step) and at once
when the master says its files changed, the worker scans its own copy of
the table (in a thread, the same scanner as the master's, so a file edited
or deleted here is found) and sends the master the digest of what it
holds.  (When the master says its files changed, the worker's last scan
serves, updated with what the last transfer put in place: the worker's own
edits are found by the timed checks and at joining, which walk the whole
table.)  In sync: done.  When the worker holds one of the master's recent
generations, the master knows what differs and sends it at once.  Else
the master names the buckets that differ; the worker streams the manifest
of those buckets only.  Then it receives the bundle the master sends: files written to temporary names as they arrive,
all renamed into place when the bundle is complete, extras deleted, empty
folders pruned where the table says.  Every path is checked against the
table before anything is written: a master, even a hostile one, cannot
write outside the synchronised folders.  One sync at a time.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ..agents.registry import AgentRegistry
from ..home import WazuhHome
from ..internal_options import InternalOptions
from ..protocol.stream import SinkFactory, chunksOf
from ..stats import NodeStats
from ..sync.bundle import BundleWriter
from ..sync.digest import BUCKETS, bucketOf
from ..sync.manifest import FileEntry, encodeManifest
from ..sync.scan import IntegrityScanner, ScanResult
from ..sync.stager import Stager, removeStaleTemporaries
from ..sync.table import SyncTable, UnsafePath
from ..sync.transfer import MAX_BUNDLE_BYTES, MAX_PATH_LIST_BYTES, BundleSink, PathListSink, jsonObject


#: Seconds before a check the master answered "busy" is tried again.
BUSY_RETRY = 1.0

#: The registry, as the table names it: when a transfer brings it, agents may be gone.
CLIENT_KEYS = "etc/client.keys"


class WorkerIntegrity(Service):
    """The worker's integrity cycle."""

    log = Logger()

    def __init__(
        self,
        home: WazuhHome,
        table: SyncTable,
        options: InternalOptions,
        clock: IReactorTime,
        nodeName: str,
        runInThread: Callable[..., Deferred] = deferToThread,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """
        @param jitter: a number from 0 to 1 that spreads the timed cycles
            over C{sync_integrity} plus or minus a tenth.
        """
        self.home = home
        self.table = table
        self.options = options
        self.clock = clock
        self.runInThread = runInThread
        self.logTag = f"[Worker {nodeName}] [Integrity]"
        self.scanner = IntegrityScanner(home.root, table)
        #: Where the connection to the master comes from (set by the builder).
        self.connectionToMaster: Callable[[], Any] = lambda: None
        #: Whether a sync is under way (not Service.running: that one says started).
        self.syncing = False
        self.lastResult: dict[str, Any] = {}
        #: The master's generation this worker last found itself in sync with, or applied.
        self.generation = 0
        self.jitter = jitter
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        self._again = False
        #: The last scan of this worker's files, kept up to date with what
        #: transfers put in place; None when it must be walked again.
        self._lastScan: ScanResult | None = None
        self._fullScanNext = True
        self._bundleSink: BundleSink | None = None
        self._retry = False
        self._bundleDone: Deferred[None] | None = None
        self._bundleExpected: IDelayedCall | None = None
        self._next: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        removed = removeStaleTemporaries(
            [self.home.path(f) for f in self.table.folders() if os.path.isdir(self.home.path(f))]
        )
        if removed:
            self.log.info(
                "Removed {n} temporary files left by an interrupted transfer.", n=len(removed)
            )
        self._schedule()

    def stopService(self) -> None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def _schedule(self, delay: float | None = None) -> None:
        """The next cycle: in C{delay} seconds, or a timed one in a jittered C{sync_integrity}."""
        if not self.running:
            return
        cycle = self._cycle
        if delay is None:
            delay = self.options.sync_integrity * (0.9 + 0.2 * self.jitter())
            cycle = self._timedCycle
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = self.clock.callLater(delay, cycle)

    def _timedCycle(self) -> Deferred[None]:
        # The timed check walks the whole table: the safety net for files
        # edited or deleted on this worker.
        self._fullScanNext = True
        return self._cycle()

    def resolver(self) -> Callable[[str], tuple[str, int, str | None]]:
        """
        Where each file of one transfer from the master goes, and with which
        mode; refuses unsafe paths.
        """
        resolve = self.table.resolver(self.home.root)
        pruneRoots = {
            rule.folder: self.home.path(rule.folder) if rule.prune_empty_folders else None for rule in self.table.rules
        }

        def where(relpath: str) -> tuple[str, int, str | None]:
            target, rule = resolve(relpath)
            return target, rule.mode, pruneRoots[rule.folder]

        return where

    def syncSoon(self) -> None:
        """
        Sync now (or right after the running sync), walking the whole table:
        the worker just joined the master.
        """
        self._fullScanNext = True
        self.masterChanged()

    def masterChanged(self) -> None:
        """
        The master's files changed: sync now (or right after the running
        sync) from the last scan, updated with what transfers put in place.
        """
        if self.syncing:
            self._again = True
        else:
            self._schedule(0)

    def _cycle(self) -> Deferred[None]:
        self._next = None
        return Deferred.fromCoroutine(self.sync()).addErrback(
            lambda f: self.log.failure("Integrity cycle failed", f)
        )

    async def sync(self) -> None:
        """One integrity sync with the master, if connected and none is running."""
        connection = self.connectionToMaster()
        if connection is None or self.syncing:
            return
        self.syncing = True
        self._bundleDone = Deferred()
        try:
            scan = await self._scan()
            check = jsonObject(
                await connection.streams.send(
                    "integrity-check",
                    json.dumps({"generation": self.generation, "digest": scan.digest.encode().hex()}),
                    chunksOf(iter(())),
                    timeout=self.options.timeout_receiving_file,
                )
            )
            if check.get("busy"):
                self._masterBusy()
            else:
                if check.get("in_sync"):
                    self.generation = int(check.get("generation", 0))
                    self.log.debug("Files in sync with the master ({n} files).", n=len(scan.files))
                    synced = True
                elif "transfer" in check:
                    # The master knew the generation this worker holds: it
                    # compared what changed since, and is sending it.
                    synced = await self._takeDifferences(connection, check)
                else:
                    synced = await self._listDifferences(connection, scan.files, _bucketsOf(check))
                if synced:
                    self.stats.metrics.lastSync.set(self.clock.seconds())
            self.stats.count("integrity_syncs")
        except Exception as e:
            self.stats.count("errors")
            self.log.warn(
                "Integrity sync failed: {why}; retrying in {n} seconds.",
                why=str(e) or type(e).__name__,
                n=self.options.sync_integrity,
            )
        finally:
            self.syncing = False
            self._bundleDone = None
            if self._again:
                self._again = False
                self.masterChanged()
            elif self._retry:
                self._retry = False
                self._schedule(BUSY_RETRY)
            elif self._next is None:
                self._schedule()

    def _masterBusy(self) -> None:
        # The master is still closing this worker's previous transfer (its
        # answer crossed this check): again shortly, not a cycle later.
        self.log.debug("The master is still busy with this worker's previous sync; again in {n} s.", n=BUSY_RETRY)
        self._retry = True

    async def _scan(self) -> ScanResult:
        """A walk of the table when one is due, else the last scan."""
        if self._fullScanNext or self._lastScan is None:
            self._fullScanNext = False
            self._lastScan = await self.runInThread(self.scanner.scan)
        return self._lastScan

    async def _listDifferences(self, connection: Any, files: Mapping[str, FileEntry], buckets: list[int]) -> bool:
        """Send the manifest of the buckets that differ, and take what the master sends back."""
        pieces = await self.runInThread(_manifestPieces, files, frozenset(buckets))
        answer = jsonObject(
            await connection.streams.send(
                "integrity-manifest",
                json.dumps({"buckets": buckets}),
                chunksOf(iter(pieces)),
                timeout=self.options.timeout_receiving_file,
            )
        )
        if answer.get("busy"):
            self._masterBusy()
            return False
        return await self._takeDifferences(connection, answer)

    async def _takeDifferences(self, connection: Any, answer: dict[str, Any]) -> bool:
        """Take what the master's comparison says: the bundle it sends, the files it asks for."""
        if answer.get("in_sync"):
            self.generation = int(answer.get("generation", self.generation))
            self.log.debug("Files in sync with the master.")
        else:
            self.log.info(
                "Integrity check: {missing} missing, {shared} different, {extra} extra,"
                " {extra_valid} extra valid.",
                missing=answer.get("missing"),
                shared=answer.get("shared"),
                extra=answer.get("extra"),
                extra_valid=answer.get("extra_valid"),
            )
            if answer.get("transfer"):
                try:
                    await self._waitForBundle(connection)
                finally:
                    applied = await self._takeApplied()
                failed = "error" in self.lastResult
                if not failed:
                    self.generation = int(answer.get("generation", self.generation))
                if CLIENT_KEYS in applied:
                    # Agents may have been removed: their files go too.
                    await self._removeFilesOfUnregisteredAgents()
                return not failed
            elif answer.get("extra_valid"):
                # Group files only this worker has: those of agents the
                # master does not register go (the others it asks for).
                await self._removeFilesOfUnregisteredAgents()
        return True

    async def _takeApplied(self) -> frozenset[str]:
        """
        The paths the last transfer wrote or deleted; the last scan is
        updated with them (or walked next time, when they are not known).
        """
        sink, self._bundleSink = self._bundleSink, None
        applied = sink.applied if sink is not None else None
        if applied is None:
            self._lastScan = None
            return frozenset()
        paths = applied.written + applied.deleted
        if self._lastScan is not None:
            self._lastScan = await self.runInThread(self.scanner.rescan, self._lastScan, paths)
        return frozenset(paths)

    async def _waitForBundle(self, connection: Any) -> None:
        done = self._bundleDone
        if done is None or done.called:
            return
        # A link lost before the bundle opened ends the wait at once.
        connection.whenLost().addCallback(
            lambda _: done.called or done.errback(ConnectionError("the connection to the master was lost"))
        )
        # The master opens the bundle stream right away; once open, the
        # stream's own idle timeout bounds it.
        self._bundleExpected = self.clock.callLater(
            self.options.timeout_receiving_file,
            lambda: done.called or done.errback(TimeoutError("the master did not send the files")),
        )
        try:
            await done
        finally:
            if self._bundleExpected is not None and self._bundleExpected.active():
                self._bundleExpected.cancel()

    def _bundleOpened(self) -> None:
        if self._bundleExpected is not None and self._bundleExpected.active():
            self._bundleExpected.cancel()

    def _bundleFinished(self, result: dict[str, Any] | None, error: str | None) -> None:
        self.lastResult = result or {"error": error}
        if result is not None:
            self.stats.count("integrity_files_received", result.get("written", 0))
            self.stats.metrics.filesReceived.inc(result.get("written", 0))
            self.stats.count("integrity_bytes_received", result.get("bytes", 0))
        done = self._bundleDone
        if done is not None and not done.called:
            if result is None:
                done.errback(RuntimeError(error or "the transfer broke"))
            else:
                done.callback(None)

    def _removeFilesOfUnregisteredAgents(self) -> Deferred[None]:
        """
        Remove the group and status files of agents client.keys does not hold
        (removed on the master, or added here by hand).  Awaited by the sync,
        so that it never runs beside the next bundle's commit.
        """

        def done(result: tuple[list[str], list[str]]) -> None:
            removed, _ = result
            if removed:
                self._lastScan = None
                self.log.info(
                    "Removed {n} group and status files of agents not registered on the master.",
                    n=len(removed),
                )

        return self.runInThread(AgentRegistry(self.home).removeFilesOfUnregistered, False).addCallbacks(
            done, lambda f: self.log.failure("Could not remove the files of removed agents", f)
        )

    def sinksFor(self, connection: Any) -> dict[str, tuple[SinkFactory, int]]:
        """The streams the master may send this worker."""

        def bundle(info: str) -> BundleSink:
            self._bundleOpened()
            sink = self._bundleSink = BundleSink(
                Stager(self.resolver(), UnsafePath, targetsChecked=True), self.runInThread,
                f"master {connection.masterName or connection.peerDescription()}",
                self._bundleFinished, logTag=self.logTag,
            )
            return sink

        def request(info: str) -> PathListSink:
            return PathListSink(lambda paths: self._sendExtraValid(connection, paths))

        return {
            "integrity-bundle": (bundle, MAX_BUNDLE_BYTES),
            "integrity-request": (request, MAX_PATH_LIST_BYTES),
        }

    def _extraValidFiles(self, paths: list[str]) -> list[tuple[str, str]]:
        """The requested paths that are this worker's extra-valid files (blocking)."""
        files = []
        for path in paths:
            try:
                target, rule = self.table.resolve(self.home.root, path)
            except UnsafePath as e:
                self.log.warn("The master asked for a file it may not have: {why}.", why=e)
                continue
            if rule.extra_valid and os.path.isfile(target):
                files.append((path, target))
        return files

    def _sendExtraValid(self, connection: Any, paths: list[str]) -> None:
        """Send the master the files it asked for (only extra-valid ones)."""

        async def send() -> None:
            pieces = None
            try:
                files = await self.runInThread(self._extraValidFiles, paths)
                writer = BundleWriter(files, [])
                pieces = writer.chunks()
                await connection.streams.send(
                    "extra-valid", json.dumps({"files": len(files)}),
                    lambda: self.runInThread(next, pieces, None),
                    timeout=self.options.timeout_receiving_file,
                )
                self.log.info("Sent {n} agent group files to the master.", n=len(writer.sent))
                self.stats.count("integrity_files_sent", len(writer.sent))
                self.stats.count("integrity_bytes_sent", writer.bytesOut)
            except Exception as e:
                self.log.warn("Could not send agent group files to the master: {why}.", why=e)
            finally:
                if pieces is not None:
                    pieces.close()

        Deferred.fromCoroutine(send())


def _bucketsOf(check: dict[str, Any]) -> list[int]:
    """The buckets the master's answer names; every one if it names none a worker can use."""
    buckets = check.get("buckets")
    if type(buckets) is list and all(type(b) is int and 0 <= b < BUCKETS for b in buckets):
        return sorted(set(buckets))
    return list(range(BUCKETS))


def _manifestPieces(files: Mapping[str, FileEntry], buckets: frozenset[int]) -> list[bytes]:
    """The manifest of the files in C{buckets}, in pieces (blocking: thousands of paths)."""
    if len(buckets) == BUCKETS:
        return list(encodeManifest(files))
    # Paths first, entries only for the chosen few: a scan's files make
    # each entry when asked (50,000 of them took 90 ms for one bucket).
    return list(encodeManifest({p: files[p] for p in files if bucketOf(p) in buckets}))
