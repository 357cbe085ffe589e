"""
Finding the synchronised files of one node and their MD5s.

Both sides of the integrity synchronisation scan the same way: the master to
know what it must send, a worker to tell the master what it has.  Scans run
every few seconds, so a file is re-hashed only when its size, modification
time, inode or change time moved since the last scan; an unchanged tree
costs one C{lstat} per file.  The walk never follows a symbolic link and
never reads anything but regular files, because the tree may hold links
planted to make the master send, or a worker overwrite, a file outside the
table.  Files that cannot be pinned down this round (changing while hashed,
unreadable) are reported as unstable, so the round neither sends nor deletes
them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import threading
import time
from typing import Callable, Iterable, Iterator, Mapping

from attrs import field, frozen

from ..memory import releaseFreeMemory
from .digest import TreeDigest, bucketOf, leafOf
from .manifest import FileEntry
from .table import MAX_PATH_BYTES, TEMPORARY_PREFIX, SyncRule, SyncTable, UnsafePath, isInside

__all__ = ["RACY_WINDOW_NS", "IntegrityScanner", "ScanFiles", "ScanResult"]

#: A file whose change time is this close (or closer) to the start of the
#: scan that hashed it is hashed again next scan: a write in the same clock
#: tick as the hash would leave its (size, mtime, inode, ctime) unchanged.
RACY_WINDOW_NS = 50_000_000

#: Filesystems that keep whole seconds (a change time with no fraction) get
#: this much more.
_COARSE_WINDOW_NS = 2_000_000_000

_md5 = hashlib.md5
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

#: What the scanner keeps of a file, in one C{bytes} of 66: its MD5 and
#: digest leaf (16 bytes each), its bucket, whether the next walk may reuse
#: the MD5 (not if the file changed too recently to trust its status), and
#: its status key (size, mtime_ns, inode, ctime_ns: what must not change for
#: its MD5 to stay valid).  One small object per file instead of a dozen:
#: 50,000 files hold about 10 MB instead of 30.  A time outside what 64 bits
#: of nanoseconds hold (before 1678 or after 2261) makes the key 64 bytes.
_HEAD = struct.Struct("<16s16sB?")
_KEY = struct.Struct("<qqQq")
_MD5_AT = 0
_LEAF_AT = 16
_BUCKET_AT = 32
_REUSABLE_AT = 33
_KEY_AT = _HEAD.size


class ScanFiles(Mapping[str, FileEntry]):
    """
    The files of a scan: relative path -> L{FileEntry}, read-only.  The
    entries are made when asked for, from the scanner's compact records.
    """

    __slots__ = ("_records",)

    def __init__(self, records: Mapping[str, bytes]) -> None:
        self._records = records

    def __getitem__(self, relpath: str) -> FileEntry:
        return _entryOf(self._records[relpath])

    def get(self, relpath: str, default: object = None) -> object:  # type: ignore[override]
        record = self._records.get(relpath)
        return default if record is None else _entryOf(record)

    def __contains__(self, relpath: object) -> bool:
        return relpath in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<ScanFiles of {len(self._records)} files>"

    def subset(self, relpaths: Iterable[str]) -> "ScanFiles":
        """The files at C{relpaths}, all of which must be among these."""
        records = self._records
        return ScanFiles({relpath: records[relpath] for relpath in relpaths})

    def changedSince(self, before: "ScanFiles", buckets: Iterable[int]) -> list[str]:
        """
        The paths in C{buckets} added, removed or with another content since
        C{before} (blocking: a look at the bucket byte of every record, and
        at the MD5 of those in C{buckets}; no entry is made).
        """
        wanted = frozenset(buckets)
        ours, theirs = self._records, before._records
        changed = [
            relpath for relpath, record in ours.items()
            if record[_BUCKET_AT] in wanted and theirs.get(relpath, b"")[_MD5_AT:_LEAF_AT] != record[_MD5_AT:_LEAF_AT]
        ]
        changed.extend(
            relpath for relpath, record in theirs.items() if record[_BUCKET_AT] in wanted and relpath not in ours
        )
        return changed


def _entryOf(record: bytes) -> FileEntry:
    """The L{FileEntry} a record describes."""
    key = record[_KEY_AT:]
    if len(key) == _KEY.size:
        size, mtimeNs, _, _ = _KEY.unpack(key)
    else:
        size, mtimeNs = (int.from_bytes(key[i:i + 16], "little", signed=True) for i in (0, 16))
    return FileEntry(record[_MD5_AT:_LEAF_AT].hex(), mtimeNs / 1e9, size)


_NO_FILES = ScanFiles({})


@frozen
class ScanResult:
    """
    One scan of a node's synchronised files.

    C{files} maps every synchronised file found (relative path) to its entry.
    C{unstable} holds what must be neither sent nor deleted this round: files
    that changed while being hashed twice in a row, files that could not be
    read, and folders (ending with ``/``) that could not be listed or whose
    rule folder is an unsafe symbolic link; none of them is in C{files}.
    C{unreadable} names, among those, the files and folders that could not be
    read, and C{refused} the names that cannot be synchronised (not UTF-8,
    too long) or rule folders that are unsafe links, for the log.
    C{hashed}, C{bytesHashed} and C{reused} count the work done.
    C{digest} is the L{TreeDigest} of C{files}.
    """

    files: ScanFiles
    unstable: frozenset[str]
    hashed: int
    bytesHashed: int
    reused: int
    unreadable: frozenset[str] = field(default=frozenset())
    refused: frozenset[str] = field(default=frozenset())
    digest: TreeDigest = field(default=TreeDigest())


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must not change for a cached MD5 to stay valid."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _packedKey(st: os.stat_result) -> bytes:
    """L{_key} as the last bytes of a record."""
    try:
        return _KEY.pack(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    except struct.error:
        return b"".join(value.to_bytes(16, "little", signed=True) for value in _key(st))


class IntegrityScanner:
    """
    Walks the table under HOME and computes MD5 and mtime of each file,
    re-hashing only files whose (size, mtime_ns, inode, ctime_ns) changed
    since the last scan.  Blocking: meant to run in a thread (deferToThread)
    one scan at a time; concurrent calls wait for each other.

    C{now} gives the wall clock in nanoseconds; tests replace it to control
    which files count as just changed (see L{RACY_WINDOW_NS}).
    """

    def __init__(
        self,
        home: str,
        table: SyncTable,
        blockSize: int = 1 << 20,
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        if blockSize < 1:
            raise ValueError(f"blockSize must be at least 1 byte, not {blockSize}")
        self._home = os.path.abspath(home)
        self._table = table
        self._blockSize = blockSize
        self._now = now
        #: The records of the last scan, by relative path (never changed once made).
        self._records: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def scan(self) -> ScanResult:
        """
        Walk every rule folder once and describe every synchronised file
        found.  Then give back to the system the memory freed since (this
        walk's and whatever else the node did meanwhile: see
        L{releaseFreeMemory}).
        """
        with self._lock:
            result = _Scan(self).run()
        releaseFreeMemory()
        return result

    def rescan(self, previous: ScanResult, relpaths: Iterable[str]) -> ScanResult:
        """
        C{previous} with only the files at C{relpaths} (relative to the home)
        looked at again: added, re-hashed or removed, without walking the
        rest of the tree.  A path the table does not synchronise, or one
        under a symbolic link, is skipped; a folder among C{relpaths} is not
        walked (a full L{scan} finds what it holds).
        """
        with self._lock:
            return _Scan(self, previous).update(relpaths)

    # Used by _Scan; kept apart so that a test can replace it.
    def _hashFile(self, path: str, expected: os.stat_result) -> tuple[str, os.stat_result, int]:
        """
        The MD5 of the regular file at C{path}, which C{expected} describes,
        the file's status after reading, and the bytes read; the MD5 is empty
        if fewer bytes than expected could be read.  It reads at most the
        expected size, so a file growing while hashed costs no more (and a
        device swapped in is not read forever); the caller compares the status
        after with C{expected}.
        """
        fd = os.open(path, _OPEN_FLAGS)
        try:
            digest = _md5(usedforsecurity=False)
            blockSize = self._blockSize
            size = expected.st_size
            total = 0
            while total < size:
                try:
                    data = os.read(fd, min(blockSize, size - total))
                except OSError:
                    after = os.fstat(fd)
                    if _key(after) != _key(expected) or not stat.S_ISREG(after.st_mode):
                        # Swapped for a folder, a fifo...: the caller retries.
                        return "", after, total
                    raise
                if not data:
                    return "", os.fstat(fd), total
                digest.update(data)
                total += len(data)
            return digest.hexdigest(), os.fstat(fd), total
        finally:
            os.close(fd)


class _Scan:
    """One walk of the table: the state of one L{IntegrityScanner.scan} call."""

    def __init__(self, scanner: IntegrityScanner, previous: ScanResult | None = None) -> None:
        self.scanner = scanner
        self.table = scanner._table
        self.home = scanner._home
        self.oldRecords = scanner._records
        self.records: dict[str, bytes] = {}
        self.unstable: set[str] = set()
        self.unreadable: set[str] = set()
        self.refused: set[str] = set()
        self.buckets = [0] * len(TreeDigest().buckets)
        if previous is not None:
            self.records = dict(previous.files._records)
            self.unstable = set(previous.unstable)
            self.unreadable = set(previous.unreadable)
            self.refused = set(previous.refused)
            self.buckets = list(previous.digest.buckets)
        self.hashed = 0
        self.bytesHashed = 0
        self.reused = 0
        self.started = scanner._now()

    def run(self) -> ScanResult:
        """Walk every rule and return the result; the records keep only what was seen."""
        ruleFolders = frozenset(self.table.folders())
        for rule in self.table.rules:
            base = self._ruleFolder(rule)
            if base is not None:
                self._walk(rule, base, ruleFolders)
        return self._result()

    def update(self, relpaths: Iterable[str]) -> ScanResult:
        """Look at each of C{relpaths} again, and return the result."""
        realHome = os.path.realpath(self.home)
        for relpath in set(relpaths):
            old = self.records.pop(relpath, None)
            if old is not None:
                self.buckets[old[_BUCKET_AT]] ^= int.from_bytes(old[_LEAF_AT:_BUCKET_AT], "big")
            self.unstable.discard(relpath)
            self.unreadable.discard(relpath)
            self.refused.discard(relpath)
            path = self._confined(relpath, realHome)
            if path is None:
                continue
            try:
                st = os.lstat(path)
            except OSError as e:
                self._couldNotRead(relpath, e)
                continue
            if stat.S_ISREG(st.st_mode):
                self._hash(relpath, path, st)
        return self._result()

    def _confined(self, relpath: str, realHome: str) -> str | None:
        """
        The absolute path of C{relpath} if the walk would find it there: a
        file the table synchronises, with no symbolic link between its rule
        folder (itself a folder, or a link to one inside the home) and it.
        """
        try:
            rule = self.table.validate(relpath)
        except UnsafePath:
            return None
        base = self._ruleFolder(rule)
        if base is None:
            return None
        path = os.path.join(self.home, relpath)
        under = os.path.dirname(relpath[len(rule.folder):])
        expected = os.path.join(os.path.realpath(base), under) if under else os.path.realpath(base)
        if os.path.realpath(os.path.dirname(path)) != expected or not isInside(expected, realHome):
            return None
        return path

    def _couldNotRead(self, relpath: str, error: OSError) -> None:
        """C{relpath} could not be read: held this round, unless it is simply gone."""
        if error.errno not in _GONE:
            self.unstable.add(relpath)
            self.unreadable.add(relpath)

    def _result(self) -> ScanResult:
        self.scanner._records = self.records
        return ScanResult(
            files=ScanFiles(self.records) if self.records else _NO_FILES,
            unstable=frozenset(self.unstable),
            hashed=self.hashed,
            bytesHashed=self.bytesHashed,
            reused=self.reused,
            unreadable=frozenset(self.unreadable),
            refused=frozenset(self.refused),
            digest=TreeDigest(tuple(self.buckets)),
        )

    def _ruleFolder(self, rule: SyncRule) -> str | None:
        """
        The absolute folder of C{rule} if it should be walked: it exists and
        is a real folder (as L{SyncTable.resolve} accepts); a symbolic link,
        wherever it leads, or anything else is held and refused.
        """
        base = os.path.join(self.home, rule.folder[:-1])
        try:
            st = os.lstat(base)
        except FileNotFoundError:
            return None
        except OSError:
            self.unstable.add(rule.folder)
            self.unreadable.add(rule.folder)
            return None
        if stat.S_ISDIR(st.st_mode):
            return base
        self.unstable.add(rule.folder)
        self.refused.add(rule.folder)
        return None

    def _walk(self, rule: SyncRule, base: str, ruleFolders: frozenset[str]) -> None:
        """Add every synchronised file under C{base}, the folder of C{rule}."""
        excludedNames = self.table.excluded_names
        excludedSuffixes = self.table.excluded_suffixes
        names = rule.names
        recursive = rule.recursive
        oldRecords = self.oldRecords
        records = self.records
        buckets = self.buckets
        stack = [(base, rule.folder)]
        while stack:
            folder, relFolder = stack.pop()
            try:
                entries = os.scandir(folder)
            except OSError as e:
                self._couldNotRead(relFolder, e)
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    if (
                        name in excludedNames
                        or name.endswith(excludedSuffixes)
                        or name.startswith(TEMPORARY_PREFIX)
                    ):
                        continue
                    relpath = relFolder + name
                    if not name.isascii() or len(relpath) > MAX_PATH_BYTES // 4:
                        if not _synchronisable(relpath):
                            self.refused.add(relpath)
                            continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive and relpath + "/" not in ruleFolders:
                                stack.append((entry.path, relpath + "/"))
                            continue
                        if not entry.is_file(follow_symlinks=False):
                            continue
                    except OSError:
                        continue
                    if names is not None and name not in names:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError as e:
                        self._couldNotRead(relpath, e)
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    old = oldRecords.get(relpath)
                    if old is not None and old[_REUSABLE_AT] and old[_KEY_AT:] == _packedKey(st):
                        records[relpath] = old
                        buckets[old[_BUCKET_AT]] ^= int.from_bytes(old[_LEAF_AT:_BUCKET_AT], "big")
                        self.reused += 1
                        continue
                    self._hash(relpath, entry.path, st)

    def _hash(self, relpath: str, path: str, st: os.stat_result) -> None:
        """
        Hash one file; if its status changed while it was hashed, hash it once
        more, and if it changes again call it unstable.
        """
        for attempt in range(2):
            try:
                digest, after, read = self.scanner._hashFile(path, st)
            except OSError as e:
                self._couldNotRead(relpath, e)
                return
            if attempt == 0:
                self.hashed += 1
            self.bytesHashed += read
            if digest and _key(after) == _key(st):
                bucket, leaf = bucketOf(relpath), leafOf(relpath, digest)
                self.buckets[bucket] ^= leaf
                window = RACY_WINDOW_NS
                if st.st_ctime_ns % 1_000_000_000 == 0:
                    window += _COARSE_WINDOW_NS
                self.records[relpath] = _HEAD.pack(
                    bytes.fromhex(digest), leaf.to_bytes(16, "big"), bucket,
                    st.st_ctime_ns < self.started - window,
                ) + _packedKey(st)
                return
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError as e:
                self._couldNotRead(relpath, e)
                return
            if not stat.S_ISREG(st.st_mode):
                return
        self.unstable.add(relpath)


def _synchronisable(relpath: str) -> bool:
    """Whether C{relpath}, found on disk, can cross the wire: valid UTF-8, within limits."""
    try:
        return len(relpath.encode("utf-8")) <= MAX_PATH_BYTES
    except UnicodeEncodeError:
        return False
