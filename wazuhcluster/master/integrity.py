"""
The master's side of integrity: its files, and what it does for one worker.

Every C{recalculate_integrity} seconds the master walks the table in a
thread, re-hashing only files whose size, mtime, inode or ctime moved; when
inotify names changed files it re-hashes just those.  Each result whose
files differ from the last one is a new generation, with a L{TreeDigest}:
the workers are told, and sync at once.

A worker's check costs the master next to nothing when the worker is in
sync: the worker sends the digest of the files it holds (an
C{integrity-check} stream with no data); equal roots end the check.  A
digest of one of the master's recent generations (its L{ChangeLog}) says
which files the worker holds: only the paths changed since are compared,
and the transfer starts from the check.  Else the master answers with the
buckets that differ, the worker streams the manifest of those buckets
only, and the master compares them with its own (decoding and comparing in
threads).  Either way it records the counts, answers with them, and
streams the worker the bundle of the missing and different files
plus the list of files to delete: built once per (generation, delta) and
shared by every worker that needs the same (L{BundleCache}).  Files under
an "extra valid" rule that only the worker has (agent group assignments of
agents that started reporting to it) are asked for, kept only for agents
the master knows, and only if asked for and a valid group list.  One sync
at a time per worker; any failure is logged and the next cycle retries.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ..agents.clientkeys import groupProblem, knownAgentIDs
from ..home import WazuhHome
from ..internal_options import InternalOptions
from ..protocol.mastercommands import IntegrityChanged
from ..protocol.stream import SinkFactory, chunksOf
from ..stats import NodeStats
from ..sync.bundle import Limits
from ..sync.changelog import ChangeLog
from ..sync.compare import Comparison, compare
from ..sync.digest import BUCKETS, DigestError, TreeDigest, bucketOf
from ..sync.manifest import ManifestDecoder
from ..sync.scan import IntegrityScanner, ScanFiles, ScanResult
from ..sync.stager import Stager
from .bundlecache import BundleCache
from ..sync.status import IntegrityStatus
from ..sync.table import SyncTable, UnsafePath
from ..sync.transfer import MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES, BundleSink, jsonObject, pathLines

RunInThread = Callable[..., Deferred]

#: What a worker's group files may weigh: a group assignment is one line of
#: group names (a few KiB with many groups), so a bomb stops here.
EXTRA_VALID_LIMITS = Limits(maxFileSize=64 * 1024, maxTotalBytes=256 * 1024 * 1024, maxPathBytes=512)

#: The registry, as the table names it.
CLIENT_KEYS = "etc/client.keys"

#: Entries a worker's manifest may list beyond twice the master's own files
#: in the buckets it covers (its extra files, before they are deleted).
MANIFEST_SLACK = 10_000

#: Seconds between inotify's first event and the rescan of the paths it
#: named: a file written then renamed into place is one rescan.
CHANGE_SETTLE = 0.02

#: inotify's flag for an event about a folder, and for a lost queue.
_IN_ISDIR = 0x40000000
_IN_Q_OVERFLOW = 0x00004000


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
        #: Bumped each time the master's files change.
        self.generation = 0
        #: The paths of each bucket of the current files.
        self.index = BucketIndex(ScanFiles({}))
        #: What the recent generations changed: a worker holding one of them
        #: is sent the difference without listing its files.
        self.changes = ChangeLog()
        self.bundles = BundleCache(home.path("queue", "cluster"), runInThread)
        self.statuses: dict[str, IntegrityStatus] = {}
        #: The extra-valid paths asked of each worker, until it sends them.
        self._askedFor: dict[str, frozenset[str]] = {}
        #: The node's counters (the builder hands over the node's own).
        self.stats = NodeStats()
        #: Called when a scan finds client.keys changed (and after the first scan).
        self.onClientKeysChanged: Callable[[], object] | None = None
        self._scanning: list[Deferred] | None = None
        #: What the pass after the running scan must look at: None (nothing
        #: asked), a set of changed paths, or True (everything).
        self._nextPass: set[str] | bool | None = None
        self._nextWaiters: list[Deferred] = []
        self._changedPaths: set[str] | bool = set()
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
        self.bundles.clear()

    def statusOf(self, name: str) -> IntegrityStatus:
        """The sync status of worker C{name} (a fresh one for a new worker)."""
        return self.statuses.setdefault(name, IntegrityStatus())

    # The master's manifest.

    def _cycle(self, paths: set[str] | None = None) -> Deferred:
        return self.recalculate(paths).addErrback(
            lambda f: self.log.failure("Could not compute the integrity of the master's files", f)
        )

    def recalculate(self, paths: set[str] | None = None) -> Deferred[ScanResult]:
        """
        Scan in a thread: the whole table, or only C{paths} (relative to the
        home) once a full scan exists.  Fires with the result of a scan that
        started after this call: while one runs, the request waits for the
        pass that follows it (a change seen during a scan is never lost to
        a scan that already walked past it).  Workers are told when the
        files changed.
        """
        waiter: Deferred[ScanResult] = Deferred()
        wanted: set[str] | bool = True if paths is None or self.current is None else set(paths)
        if self._scanning is not None:
            if wanted is True or self._nextPass is True:
                self._nextPass = True
            else:
                self._nextPass = (self._nextPass or set()) | wanted  # type: ignore[operator]
            self._nextWaiters.append(waiter)
            return waiter
        self._scanning = [waiter]
        started = self.clock.seconds()
        scanning = self.runInThread(self._pass, self.current, None if wanted is True else wanted)

        def done(passed: tuple[ScanResult, list[str] | None]) -> None:
            result, changed = passed
            previous, self.current = self.current, result
            self.log.debug(
                "Integrity computed: {n} files, {hashed} hashed, {reused} unchanged, in {t:.3f} s.",
                n=len(result.files),
                hashed=result.hashed,
                reused=result.reused,
                t=self.clock.seconds() - started,
            )
            if previous is None or (previous.unreadable, previous.refused) != (result.unreadable, result.refused):
                for path in sorted(result.unreadable)[:20]:
                    self.log.error("Cannot read {path}: it is not synchronised until it can be read.", path=path)
                for path in sorted(result.refused)[:20]:
                    self.log.error("Skipped {path}: {why}.", path=path,
                                   why="not a UTF-8 name, or a synchronised folder that is a symbolic link")
            if previous is None or previous.digest != result.digest or previous.unstable != result.unstable:
                self.generation += 1
                self.index = BucketIndex(result.files)
                if previous is not None and changed:
                    self.changes.record(previous, changed)
                if previous is not None:
                    self._notifyWorkers()
            if self.onClientKeysChanged is not None and (
                previous is None or previous.files.get(CLIENT_KEYS) != result.files.get(CLIENT_KEYS)
            ):
                self.onClientKeysChanged()
            self._passDone(lambda w: w.callback(result))

        def failed(failure: Any) -> None:
            self._passDone(lambda w: w.errback(failure))

        scanning.addCallbacks(done, failed)
        return waiter

    def _pass(self, previous: ScanResult | None, paths: set[str] | None) -> tuple[ScanResult, list[str] | None]:
        """
        One scan: of the whole table, or of C{paths} in C{previous}; and the
        paths whose files changed since C{previous}, when its digest did
        (blocking).
        """
        if paths is None or previous is None:
            result = self.scanner.scan()
        else:
            result = self.scanner.rescan(previous, paths)
        if previous is None or previous.digest == result.digest:
            return result, None
        return result, result.files.changedSince(previous.files, previous.digest.differing(result.digest))

    def _passDone(self, fire: Callable[[Deferred], object]) -> None:
        """End the running pass: start the one asked for meanwhile, then fire the waiters."""
        waiters, self._scanning = self._scanning or [], None
        nextPass, self._nextPass = self._nextPass, None
        nextWaiters, self._nextWaiters = self._nextWaiters, []
        if nextPass is not None:
            self.recalculate(None if nextPass is True else nextPass).addBoth(_fireAll, nextWaiters)
        for w in waiters:
            fire(w)

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

    def _changed(self, watch: object, path: FilePath, mask: int) -> None:
        # Changes come in bursts (a file written, then renamed): rescan the
        # named files once, shortly; a folder event (a tree moved in or
        # out) needs the whole walk.
        if self._changedPaths is not True:
            if mask & (_IN_ISDIR | _IN_Q_OVERFLOW):
                self._changedPaths = True
            else:
                relpath = os.path.relpath(os.fsdecode(path.path), self.home.root)
                self._changedPaths.add(relpath)
        if self._pendingRescan is None or not self._pendingRescan.active():
            self._pendingRescan = self.clock.callLater(CHANGE_SETTLE, self._rescanChanged)

    def _rescanChanged(self) -> None:
        paths, self._changedPaths = self._changedPaths, set()
        self._cycle(None if paths is True else paths)  # type: ignore[arg-type]

    # A worker's sync.

    def sinksFor(self, connection: Any) -> dict[str, tuple[SinkFactory, int]]:
        """The streams a worker's connection may send to the master."""
        return {
            "integrity-check": (lambda info: _CheckSink(self, connection, info), 0),
            "integrity-manifest": (lambda info: _ManifestSink(self, connection, info), MAX_MANIFEST_BYTES),
            "extra-valid": (lambda info: self._extraValidSink(connection), MAX_BUNDLE_BYTES),
        }

    async def check(self, connection: Any, info: str) -> str:
        """
        A worker's check: the digest of the files it holds against the
        master's.  Equal: in sync, and nothing else is done.  The digest of
        a recent generation: what changed since is compared, and sent, as
        if the worker had listed it.  Else: the buckets whose files the
        worker must list.
        """
        try:
            request = json.loads(info)
            generation = request["generation"]
            digest = TreeDigest.decode(bytes.fromhex(request["digest"]))
            if type(generation) is not int:
                raise TypeError("the generation is not a whole number")
        except (ValueError, KeyError, TypeError) as e:
            raise DigestError(f"the integrity check is malformed ({e})") from None
        status = self.statusOf(connection.nodeName)
        if status.running:
            return json.dumps({"busy": True})
        started = self.clock.seconds()
        current = self.current if self.current is not None else await self.recalculate()
        differing = current.digest.differing(digest)
        if differing:
            held = self.changes.since(digest)
            if held is None:
                return json.dumps({"in_sync": False, "generation": self.generation, "buckets": differing})
            return await self._sync(connection, _compareChanged, held, current, self.table)
        now = self.clock.seconds()
        status.date_start, status.date_end, status.last_error = now, now, ""
        status.missing = status.shared = status.extra = status.extra_valid = 0
        self._ended(connection.nodeName, "in_sync", started)
        return json.dumps({"in_sync": True, "generation": self.generation})

    async def workerManifest(self, connection: Any, decoder: ManifestDecoder, buckets: frozenset[int] | None) -> str:
        """
        Compare the worker's manifest of C{buckets} (of all its files if
        L{None}) with the master's, start the transfer it needs, and return
        the counts for the worker.
        """
        if self.current is None:
            await self.recalculate()
        return await self._sync(connection, _compareManifest, decoder, buckets, self.index, self.table, self.current)

    async def _sync(self, connection: Any, comparing: Callable[..., Comparison], *args: Any) -> str:
        """
        Compare (in a thread: C{comparing(*args)}) the worker's files with the
        current ones, start the transfer it needs, and return the counts for
        the worker.
        """
        name = connection.nodeName
        status = self.statusOf(name)
        if status.running:
            return json.dumps({"busy": True})
        status.running, status.date_start, status.last_error = True, self.clock.seconds(), ""
        generation = self.generation
        try:
            # Up to tens of thousands of entries: compared in a thread, like the hashing.
            comparison = await self.runInThread(comparing, *args)
        except BaseException:
            status.running = False
            self._ended(name, "failed", status.date_start)
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
            "generation": generation,
        }
        if comparison.inSync:
            status.running, status.date_end = False, self.clock.seconds()
            self._ended(name, "in_sync", status.date_start)
        else:
            Deferred.fromCoroutine(self._transfer(connection, status, comparison, generation))
        return json.dumps(answer)

    async def _transfer(
        self, connection: Any, status: IntegrityStatus, comparison: Comparison, generation: int
    ) -> None:
        name = connection.nodeName
        try:
            if comparison.missing or comparison.shared or comparison.extra:
                sending = comparison.missing + comparison.shared
                bundle = await self.bundles.bundle(generation, sending, comparison.extra, self.home.path)
                pieces = bundle.reading(self.runInThread)
                try:
                    answer = await connection.streams.send(
                        "integrity-bundle",
                        json.dumps({"files": len(sending), "deletions": len(comparison.extra), "generation": generation}),
                        lambda: Deferred.fromCoroutine(pieces.next()),
                        timeout=self.options.timeout_receiving_file,
                    )
                finally:
                    pieces.close()
                result = jsonObject(answer)
                self.stats.count("integrity_files_sent", len(bundle.sent))
                self.stats.count("integrity_bytes_sent", bundle.bytesOut)
                self.stats.metrics.filesSent.labels(worker=name).inc(len(bundle.sent))
                self.stats.metrics.bytesSent.labels(worker=name).inc(bundle.bytesOut)
                for path, reason in bundle.failed[:20]:
                    self.log.error("Could not send {path} to worker {name}: {reason}.",
                                   path=path, name=name, reason=reason)
                self.log.info(
                    "Integrity sync with worker {name}: {sent} files sent ({bytes} bytes compressed),"
                    " {deleted} deleted on the worker{skipped}.",
                    name=name,
                    sent=len(bundle.sent),
                    bytes=bundle.bytesOut,
                    deleted=result.get("deleted", 0),
                    skipped=(
                        f"; {len(bundle.skipped)} changed while being read and are retried next cycle"
                        if bundle.skipped
                        else ""
                    ),
                )
            # Only the group files of agents the master knows are worth asking
            # for: the others would be refused, every cycle.
            wanted = await self.runInThread(self._knownAgentsOnly, comparison.extra_valid)
            if wanted:
                self._askedFor[name] = frozenset(wanted)
                await connection.streams.send(
                    "integrity-request",
                    "extra-valid",
                    chunksOf(pathLines(wanted)),
                    timeout=self.options.timeout_receiving_file,
                )
            status.date_end = self.clock.seconds()
            self._ended(name, "sent", status.date_start)
        except Exception as e:
            self._ended(name, "failed", status.date_start)
            status.last_error = str(e) or type(e).__name__
            self.log.warn(
                "Integrity sync with worker {name} failed: {why}; it is retried next cycle.",
                name=name,
                why=status.last_error,
            )
        finally:
            status.running = False

    def _ended(self, name: str, result: str, started: float) -> None:
        """One check of worker C{name} ended: C{in_sync}, C{sent} (files moved) or C{failed}."""
        self.stats.count("errors" if result == "failed" else "integrity_syncs")
        self.stats.metrics.integritySyncEnded(name, result, self.clock.seconds() - started)

    def _knownAgentsOnly(self, paths: tuple[str, ...]) -> list[str]:
        """The extra-valid paths that name an agent registered here (blocking)."""
        if not paths:
            return []
        known = knownAgentIDs(self.home.path("etc", "client.keys"))
        return [p for p in paths if os.path.basename(p) in known]

    def _extraValidSink(self, connection: Any) -> BundleSink:
        """
        Group assignments a worker sends: only those the master asked it for,
        of agents the master knows, each a valid list of group names.
        """
        name = connection.nodeName
        status = self.statusOf(name)
        status.agentgroups_running, status.agentgroups_start = True, self.clock.seconds()
        askedFor = self._askedFor.pop(name, frozenset())
        known: list[frozenset[str]] = []

        def resolve(relpath: str) -> tuple[str, int, str | None]:
            # Runs in the staging thread: client.keys is read there, once.
            target, rule = self.table.resolve(self.home.root, relpath)
            if not rule.extra_valid:
                raise UnsafePath(f"{relpath!r} is not a file a worker may send")
            if relpath not in askedFor:
                raise UnsafePath(f"{relpath!r} was not asked for")
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
            _NoDeletions(resolve, UnsafePath, contentProblem=groupListProblem), self.runInThread,
            f"worker {name}", finished,
            logTag=f"[Worker {name}] [Agent-groups recv]", limits=EXTRA_VALID_LIMITS,
        )


def groupListProblem(relpath: str, content: bytes) -> str | None:
    """
    Why C{content} is not an agent's group assignment (one line of group
    names separated by commas), or L{None}.
    """
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        return "a group assignment is ASCII text"
    line = text[:-1] if text.endswith("\n") else text
    if not line or "\n" in line:
        return "a group assignment is one line of group names"
    for group in line.split(","):
        problem = groupProblem(group)
        if problem is not None:
            return problem
    return None


class _NoDeletions(Stager):
    """A stager for what a worker sends: files only, never a deletion on the master."""

    def delete(self, relpath: str) -> bool:
        self.refused.append((repr(relpath[:200]), "a worker cannot delete files on the master"))
        return False


class _CheckSink:
    """A worker's integrity check: a digest in the stream's opening, no data."""

    def __init__(self, master: MasterIntegrity, connection: Any, info: str) -> None:
        self.master = master
        self.connection = connection
        self.info = info

    def feed(self, data: bytes) -> None:
        raise DigestError("an integrity check carries no data")

    def close(self) -> Deferred[str]:
        return Deferred.fromCoroutine(self.master.check(self.connection, self.info))

    def abort(self, reason: str) -> None:
        pass


class _ManifestSink:
    """
    A worker's manifest arriving: decoded as it comes (in threads), compared
    at the end.  Its opening names the buckets it covers (all, if empty);
    it may list at most twice the master's files there, plus
    L{MANIFEST_SLACK}.
    """

    def __init__(self, master: MasterIntegrity, connection: Any, info: str) -> None:
        self.master = master
        self.connection = connection
        self.buckets = _buckets(info)
        ours = len(master.current.files) if master.current is not None else 0
        share = len(self.buckets) / BUCKETS if self.buckets is not None else 1
        self.decoder = ManifestDecoder(maxEntries=int(2 * ours * share) + MANIFEST_SLACK)

    def feed(self, data: bytes) -> Deferred[None]:
        return self.master.runInThread(self.decoder.feed, data)

    def close(self) -> Deferred[str]:
        return Deferred.fromCoroutine(self.master.workerManifest(self.connection, self.decoder, self.buckets))

    def abort(self, reason: str) -> None:
        pass


def _buckets(info: str) -> frozenset[int] | None:
    """The buckets a manifest's opening names; L{None} (all of them) when it names none."""
    if not info:
        return None
    try:
        buckets = json.loads(info)["buckets"]
        if type(buckets) is not list or not all(type(b) is int and 0 <= b < BUCKETS for b in buckets):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise DigestError(f"a manifest's opening names buckets from 0 to {BUCKETS - 1}: {info[:100]!r}") from None
    return frozenset(buckets)


def _compareManifest(
    decoder: ManifestDecoder, buckets: frozenset[int] | None, index: "BucketIndex", table: SyncTable,
    current: ScanResult,
) -> Comparison:
    """The worker's manifest of C{buckets} against the master's files there (blocking)."""
    theirs = decoder.finish()
    if buckets is None:
        return compare(index.files, theirs, table, current.unstable)
    # A path outside the buckets asked for is not the worker's to list: left alone.
    theirs = {p: e for p, e in theirs.items() if bucketOf(p) in buckets}
    return compare(index.select(sorted(buckets)), theirs, table, current.unstable)


def _compareChanged(held: dict[str, Any], current: ScanResult, table: SyncTable) -> Comparison:
    """
    A worker holding a recent generation against the current files: only
    the paths changed since can differ (blocking).
    """
    theirs = {relpath: entry for relpath, entry in held.items() if entry is not None}
    ours = current.files.subset(relpath for relpath in held if relpath in current.files)
    return compare(ours, theirs, table, current.unstable)

def _fireAll(result: Any, waiters: list[Deferred]) -> None:
    """Fire every one of C{waiters} with C{result} (a value or a failure)."""
    for waiter in waiters:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)


class BucketIndex:
    """
    The paths of a manifest by bucket, sorted out the first time a worker's
    check needs them (in a thread; thread-safe), once per generation.
    """

    def __init__(self, files: ScanFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._byBucket: list[list[str]] | None = None

    def select(self, buckets: Iterable[int]) -> ScanFiles:
        """The entries in C{buckets} (blocking)."""
        with self._lock:
            if self._byBucket is None:
                byBucket: list[list[str]] = [[] for _ in range(BUCKETS)]
                for path in self.files:
                    byBucket[bucketOf(path)].append(path)
                self._byBucket = byBucket
        byBucket = self._byBucket
        return self.files.subset(path for bucket in buckets for path in byBucket[bucket])
