"""
The stager: incoming files stay in temporaries until all are committed at
once, and a transfer given up leaves the old files and no temporaries.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.sync.stager import (
    FOLDER_MODE,
    TEMPORARY_PREFIX,
    TEMPORARY_SUFFIX,
    ChecksumMismatch,
    Stager,
    StagingError,
    removeStaleTemporaries,
    showPath,
)
from wazuhcluster.sync.stager import _TEMPORARY_NAME

# Helpers, also used by test_sync_bundle.


class Unsafe(Exception):
    """What the test policy raises for a path that must not be written."""


def makeResolve(root: str) -> Callable[[str], tuple[str, int, str | None]]:
    """
    A small path policy under C{root}: C{etc/shared/...} (mode 0o660, empty
    folders pruned under etc/shared) and C{etc/lists/...} (mode 0o640, no
    pruning); anything else, or a path with C{..}, is refused.
    """

    def resolve(relpath: str) -> tuple[str, int, str | None]:
        parts = relpath.split("/")
        if relpath.startswith("/") or ".." in parts or "" in parts or len(parts) < 3:
            raise Unsafe(f"{relpath!r} is not a path the cluster synchronises")
        if parts[:2] == ["etc", "shared"]:
            return os.path.join(root, relpath), 0o660, os.path.join(root, "etc", "shared")
        if parts[:2] == ["etc", "lists"]:
            return os.path.join(root, relpath), 0o640, None
        raise Unsafe(f"{relpath!r} is not in a synchronised folder")

    return resolve


def temporaries(root: str) -> list[str]:
    """Every file under C{root} that looks like one of our temporaries."""
    found = []
    for folder, _, names in os.walk(root):
        found.extend(os.path.join(folder, n) for n in names if n.startswith(TEMPORARY_PREFIX))
    return sorted(found)


def snapshot(root: str) -> dict[str, tuple[bytes | None, int]]:
    """Content and mode of every file and folder under C{root} (folders: None)."""
    state: dict[str, tuple[bytes | None, int]] = {}
    for folder, folders, names in os.walk(root):
        for name in folders:
            path = os.path.join(folder, name)
            state[os.path.relpath(path, root)] = (None, os.lstat(path).st_mode)
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, root)] = (f.read(), os.lstat(path).st_mode)
    return state


def put(root: str, relpath: str, data: bytes) -> str:
    """Write a file under C{root}, creating its folders."""
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def md5(data: bytes) -> bytes:
    """The MD5 digest a record carries."""
    return hashlib.md5(data).digest()


class StagerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "etc", "shared"))
        os.makedirs(os.path.join(self.root, "etc", "lists"))
        self.resolve = makeResolve(self.root)

    def path(self, relpath: str) -> str:
        return os.path.join(self.root, relpath)

    def read(self, relpath: str) -> bytes:
        with open(self.path(relpath), "rb") as f:
            return f.read()

    def stage(self, stager: Stager, relpath: str, data: bytes, mtime: float = 1_700_000_000.5) -> bool:
        if not stager.begin(relpath, len(data), mtime):
            return False
        stager.write(data)
        stager.end(md5(data))
        return True


class CommitTests(StagerTestCase):
    def test_nothingVisibleBeforeCommit(self) -> None:
        """Old files stay as they are until the commit; the new ones wait in temporaries beside them."""
        put(self.root, "etc/shared/default/agent.conf", b"old")
        stager = Stager(self.resolve, Unsafe)
        self.assertTrue(self.stage(stager, "etc/shared/default/agent.conf", b"new"))
        self.assertTrue(self.stage(stager, "etc/lists/new-list", b"list"))
        self.assertEqual(self.read("etc/shared/default/agent.conf"), b"old")
        self.assertFalse(os.path.exists(self.path("etc/lists/new-list")))
        found = temporaries(self.root)
        self.assertEqual(
            sorted(os.path.dirname(p) for p in found),
            [self.path("etc/lists"), self.path("etc/shared/default")],
        )
        for p in found:
            self.assertRegex(os.path.basename(p), r"^\.wazuhcluster-[0-9a-f]{16}\.tmp$")
        self.assertEqual(stager.staged, ("etc/shared/default/agent.conf", "etc/lists/new-list"))
        result = stager.commit()
        self.assertEqual(result.written, ("etc/shared/default/agent.conf", "etc/lists/new-list"))
        self.assertEqual(self.read("etc/shared/default/agent.conf"), b"new")
        self.assertEqual(self.read("etc/lists/new-list"), b"list")
        self.assertEqual(temporaries(self.root), [])

    def test_modeAndTime(self) -> None:
        """Each file gets the policy's mode and the sender's modification time."""
        stager = Stager(self.resolve, Unsafe)
        self.stage(stager, "etc/shared/g/a", b"a", mtime=1_600_000_000.25)
        self.stage(stager, "etc/lists/b", b"b", mtime=1234.5)
        stager.commit()
        a, b = os.stat(self.path("etc/shared/g/a")), os.stat(self.path("etc/lists/b"))
        self.assertEqual(a.st_mode & 0o7777, 0o660)
        self.assertEqual(b.st_mode & 0o7777, 0o640)
        self.assertEqual(a.st_mtime_ns, 1_600_000_000_250_000_000)
        self.assertEqual(b.st_mtime_ns, 1_234_500_000_000)

    def test_foldersCreated(self) -> None:
        """Missing folders are created with mode 0o770 whatever the umask."""
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)
        stager = Stager(self.resolve, Unsafe)
        self.stage(stager, "etc/shared/new/deeper/file", b"x")
        stager.commit()
        for folder in ("etc/shared/new", "etc/shared/new/deeper"):
            self.assertEqual(os.stat(self.path(folder)).st_mode & 0o7777, FOLDER_MODE)

    def test_deletions(self) -> None:
        """Scheduled files are deleted at the commit; one already missing is fine."""
        put(self.root, "etc/lists/a", b"a")
        stager = Stager(self.resolve, Unsafe)
        self.assertTrue(stager.delete("etc/lists/a"))
        self.assertTrue(stager.delete("etc/lists/never-there"))
        self.assertTrue(os.path.exists(self.path("etc/lists/a")))
        self.assertEqual(stager.deleting, ("etc/lists/a", "etc/lists/never-there"))
        result = stager.commit()
        self.assertEqual(result.deleted, ("etc/lists/a", "etc/lists/never-there"))
        self.assertFalse(os.path.exists(self.path("etc/lists/a")))

    def test_pruning(self) -> None:
        """
        Folders emptied by deletions are removed up to the prune root (not
        the root itself); a folder with anything left in it stays, and
        nothing is pruned where the policy gives no prune root.
        """
        put(self.root, "etc/shared/gone/sub/a", b"a")
        put(self.root, "etc/shared/gone/b", b"b")
        put(self.root, "etc/shared/kept/c", b"c")
        put(self.root, "etc/shared/kept/d", b"d")
        put(self.root, "etc/shared/last", b"last")
        put(self.root, "etc/lists/sub/e", b"e")
        os.makedirs(self.path("etc/shared/kept/empty-but-untouched"))
        stager = Stager(self.resolve, Unsafe)
        for relpath in (
            "etc/shared/gone/sub/a",
            "etc/shared/gone/b",
            "etc/shared/kept/c",
            "etc/shared/last",
            "etc/lists/sub/e",
        ):
            stager.delete(relpath)
        result = stager.commit()
        self.assertEqual(
            sorted(result.pruned), sorted([self.path("etc/shared/gone/sub"), self.path("etc/shared/gone")])
        )
        self.assertFalse(os.path.exists(self.path("etc/shared/gone")))
        self.assertTrue(os.path.isdir(self.path("etc/shared")))
        self.assertEqual(os.listdir(self.path("etc/shared")), ["kept"])
        self.assertTrue(os.path.isdir(self.path("etc/shared/kept/empty-but-untouched")))
        self.assertTrue(os.path.isdir(self.path("etc/lists/sub")))

    def test_pruneRootItselfKept(self) -> None:
        """The prune root stays even when the deletions leave it empty."""
        put(self.root, "etc/shared/only/file", b"x")
        put(self.root, "etc/shared/file", b"x")
        stager = Stager(self.resolve, Unsafe)
        stager.delete("etc/shared/only/file")
        stager.delete("etc/shared/file")
        self.assertEqual(stager.commit().pruned, (self.path("etc/shared/only"),))
        self.assertEqual(os.listdir(self.path("etc/shared")), [])

    def test_laterRecordWins(self) -> None:
        """The same target named twice ends as the later record says."""
        put(self.root, "etc/lists/deleted-then-written", b"old")
        put(self.root, "etc/lists/written-then-deleted", b"old")
        stager = Stager(self.resolve, Unsafe)
        self.stage(stager, "etc/lists/twice", b"first")
        self.stage(stager, "etc/lists/twice", b"second")
        stager.delete("etc/lists/deleted-then-written")
        self.stage(stager, "etc/lists/deleted-then-written", b"new")
        self.stage(stager, "etc/lists/written-then-deleted", b"new")
        stager.delete("etc/lists/written-then-deleted")
        self.assertEqual(len(temporaries(self.root)), 2)
        result = stager.commit()
        self.assertEqual(sorted(result.written), ["etc/lists/deleted-then-written", "etc/lists/twice"])
        self.assertEqual(result.deleted, ("etc/lists/written-then-deleted",))
        self.assertEqual(self.read("etc/lists/twice"), b"second")
        self.assertEqual(self.read("etc/lists/deleted-then-written"), b"new")
        self.assertFalse(os.path.exists(self.path("etc/lists/written-then-deleted")))
        self.assertEqual(temporaries(self.root), [])

    def test_failedRenameDoesNotStopTheOthers(self) -> None:
        """A target that turned into a folder after staging is reported; the rest is applied."""
        put(self.root, "etc/lists/gone", b"x")
        stager = Stager(self.resolve, Unsafe)
        self.stage(stager, "etc/lists/a", b"a")
        self.stage(stager, "etc/lists/b", b"b")
        stager.delete("etc/lists/gone")
        os.makedirs(self.path("etc/lists/a/now-a-folder"))
        result = stager.commit()
        self.assertEqual(result.written, ("etc/lists/b",))
        self.assertEqual(result.deleted, ("etc/lists/gone",))
        self.assertEqual([p for p, _ in result.failed], ["etc/lists/a"])
        self.assertIn("while renaming it into place", result.failed[0][1])
        self.assertEqual(temporaries(self.root), [])


class RefusalTests(StagerTestCase):
    def test_policyRefuses(self) -> None:
        """A path the policy refuses is not written, and is listed with the policy's reason."""
        stager = Stager(self.resolve, Unsafe)
        self.assertFalse(stager.begin("etc/../../outside", 1, 0.0))
        self.assertFalse(stager.delete("etc/ossec.conf"))
        self.assertTrue(self.stage(stager, "etc/lists/ok", b"ok"))
        self.assertEqual(
            stager.refused,
            [
                ("'etc/../../outside'", "'etc/../../outside' is not a path the cluster synchronises"),
                ("'etc/ossec.conf'", "'etc/ossec.conf' is not a path the cluster synchronises"),
            ],
        )
        stager.commit()
        self.assertEqual(sorted(os.listdir(self.path("etc/lists"))), ["ok"])

    def test_tupleOfUnsafeExceptions(self) -> None:
        """C{unsafe} may be a tuple; other exceptions from the policy are not swallowed."""

        class Other(Exception):
            pass

        def resolve(relpath: str) -> tuple[str, int, str | None]:
            raise {"a": Unsafe, "b": Other, "c": KeyError}[relpath]("no")

        stager = Stager(resolve, (Unsafe, Other))
        self.assertFalse(stager.begin("a", 0, 0.0))
        self.assertFalse(stager.delete("b"))
        self.assertRaises(KeyError, stager.begin, "c", 0, 0.0)

    def test_folderInTheWay(self) -> None:
        """A folder where the file should go: refused, not an error, nothing touched."""
        os.makedirs(self.path("etc/lists/a-folder/inside"))
        stager = Stager(self.resolve, Unsafe)
        self.assertFalse(stager.begin("etc/lists/a-folder", 3, 0.0))
        self.assertIn("a folder is in the way", stager.refused[0][1])
        self.assertTrue(os.path.isdir(self.path("etc/lists/a-folder/inside")))

    def test_fileInTheWay(self) -> None:
        """A file where a folder should go: refused, the file kept."""
        put(self.root, "etc/shared/plain", b"plain")
        stager = Stager(self.resolve, Unsafe)
        self.assertFalse(stager.begin("etc/shared/plain/sub/file", 3, 0.0))
        self.assertFalse(stager.begin("etc/shared/plain/file", 3, 0.0))
        self.assertEqual(len(stager.refused), 2)
        for _, reason in stager.refused:
            self.assertIn("a file is in the way", reason)
        stager.commit()
        self.assertEqual(self.read("etc/shared/plain"), b"plain")

    def test_printablePaths(self) -> None:
        """A path with a line break cannot forge a log line."""
        self.assertEqual(showPath("etc/lists/a b"), "etc/lists/a b")
        self.assertEqual(showPath("etc/lists/a\nb"), "'etc/lists/a\\nb'")


class IntegrityTests(StagerTestCase):
    def test_checksumMismatch(self) -> None:
        """Content that does not match its MD5 never reaches the target, and its temporary goes."""
        put(self.root, "etc/lists/a", b"good")
        stager = Stager(self.resolve, Unsafe)
        stager.begin("etc/lists/a", 3, 0.0)
        stager.write(b"bad")
        with self.assertRaises(ChecksumMismatch) as e:
            stager.end(md5(b"BAD"))
        self.assertEqual(e.exception.relpath, "etc/lists/a")
        self.assertIn("etc/lists/a does not match its MD5 checksum", str(e.exception))
        self.assertEqual(temporaries(self.root), [])
        stager.abort()
        self.assertEqual(self.read("etc/lists/a"), b"good")

    def test_sizeMismatch(self) -> None:
        """More or fewer bytes than announced is an error."""
        stager = Stager(self.resolve, Unsafe)
        stager.begin("etc/lists/a", 5, 0.0)
        stager.write(b"abc")
        with self.assertRaises(StagingError) as e:
            stager.end(md5(b"abc"))
        self.assertIn("etc/lists/a was announced with 5 bytes but 3 arrived", str(e.exception))
        self.assertEqual(temporaries(self.root), [])

    def test_shortWrites(self) -> None:
        """A write that takes fewer bytes than given is continued."""
        stager = Stager(self.resolve, Unsafe, writeBytes=lambda fd, data: os.write(fd, bytes(data[:3])))
        data = os.urandom(1000)
        self.stage(stager, "etc/lists/a", data)
        stager.commit()
        self.assertEqual(self.read("etc/lists/a"), data)

    def test_callsOutOfOrder(self) -> None:
        """Misuse is a programming error, said so."""
        stager = Stager(self.resolve, Unsafe)
        self.assertRaises(RuntimeError, stager.write, b"x")
        self.assertRaises(RuntimeError, stager.end, md5(b""))
        stager.begin("etc/lists/a", 1, 0.0)
        self.assertRaises(RuntimeError, stager.begin, "etc/lists/b", 1, 0.0)
        self.assertRaises(RuntimeError, stager.commit)
        stager.abort()
        self.assertRaises(StagingError, stager.begin, "etc/lists/b", 1, 0.0)
        committed = Stager(self.resolve, Unsafe)
        committed.commit()
        self.assertRaises(RuntimeError, committed.begin, "etc/lists/b", 1, 0.0)


def diskFullAfter(limit: int) -> Callable[[int, bytes | memoryview], int]:
    """A C{writeBytes} that behaves like a disk with C{limit} bytes free."""
    free = [limit]

    def writeBytes(fd: int, data: bytes | memoryview) -> int:
        if free[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = os.write(fd, bytes(data[: free[0]]))
        free[0] -= count
        return count

    return writeBytes


class AbortTests(StagerTestCase):
    def test_diskFull(self) -> None:
        """A full disk is a clear error naming the file; after abort the old files are intact."""
        put(self.root, "etc/lists/big", b"old big")
        put(self.root, "etc/lists/small", b"old small")
        before = snapshot(self.root)
        stager = Stager(self.resolve, Unsafe, writeBytes=diskFullAfter(1500))
        self.stage(stager, "etc/lists/small", b"new small")
        stager.begin("etc/lists/big", 4096, 0.0)
        with self.assertRaises(StagingError) as e:
            stager.write(b"x" * 4096)
        self.assertEqual(
            str(e.exception),
            "no space left on device while writing etc/lists/big (1491 bytes written):"
            " the transfer was abandoned and the previous files kept",
        )
        stager.abort()
        self.assertEqual(snapshot(self.root), before)
        self.assertEqual(temporaries(self.root), [])

    def test_abortRemovesTemporariesAndNewFolders(self) -> None:
        """Abort removes every temporary and the folders made for them, nothing else; twice is fine."""
        put(self.root, "etc/shared/default/agent.conf", b"old")
        put(self.root, "etc/lists/doomed", b"kept")
        before = snapshot(self.root)
        stager = Stager(self.resolve, Unsafe)
        self.stage(stager, "etc/shared/default/agent.conf", b"new")
        self.stage(stager, "etc/shared/newgroup/sub/agent.conf", b"new")
        stager.delete("etc/lists/doomed")
        stager.begin("etc/lists/half", 10, 0.0)
        stager.write(b"12345")
        self.assertEqual(len(temporaries(self.root)), 3)
        stager.abort()
        stager.abort()
        self.assertEqual(snapshot(self.root), before)

    def test_abortFromAnotherThreadWaitsForTheWrite(self) -> None:
        """
        An abort from another thread does not close the file under a write
        in progress: it waits for it, and the next write is refused.
        """
        entered, release = threading.Event(), threading.Event()

        def slowWrite(fd: int, data: bytes | memoryview) -> int:
            entered.set()
            release.wait(10)
            return os.write(fd, data)

        stager = Stager(self.resolve, Unsafe, writeBytes=slowWrite)
        stager.begin("etc/lists/a", 2, 0.0)
        writer = threading.Thread(target=stager.write, args=(b"x",))
        writer.start()
        self.assertTrue(entered.wait(10))
        aborter = threading.Thread(target=stager.abort)
        aborter.start()
        time.sleep(0.05)
        self.assertTrue(aborter.is_alive())
        self.assertEqual(len(temporaries(self.root)), 1)
        release.set()
        writer.join(10)
        aborter.join(10)
        self.assertFalse(aborter.is_alive())
        self.assertEqual(temporaries(self.root), [])
        self.assertRaises(StagingError, stager.write, b"y")


class StaleTemporaryTests(StagerTestCase):
    def test_removesOnlyOurs(self) -> None:
        """
        Files named exactly like our temporaries are removed, at any depth;
        look-alikes, folders and what lies behind symbolic links are not.
        """
        planted = [
            put(self.root, f"etc/shared/{TEMPORARY_PREFIX}0123456789abcdef{TEMPORARY_SUFFIX}", b"x"),
            put(self.root, f"etc/shared/g/deep/{TEMPORARY_PREFIX}fedcba9876543210{TEMPORARY_SUFFIX}", b"x"),
        ]
        kept = [
            put(self.root, "etc/shared/agent.conf", b"x"),
            put(self.root, f"etc/shared/{TEMPORARY_PREFIX}notes{TEMPORARY_SUFFIX}", b"x"),
            put(self.root, f"etc/shared/{TEMPORARY_PREFIX}0123456789abcdef.txt", b"x"),
            put(self.root, "etc/shared/.agent.conf.x1y2.tmp", b"x"),
        ]
        folderLike = self.path(f"etc/shared/{TEMPORARY_PREFIX}00000000000000aa{TEMPORARY_SUFFIX}")
        os.makedirs(folderLike)
        outside = os.path.abspath(self.mktemp())
        kept.append(put(outside, f"{TEMPORARY_PREFIX}0123456789abcdef{TEMPORARY_SUFFIX}", b"x"))
        os.symlink(outside, self.path("etc/shared/link"))
        removed = removeStaleTemporaries([self.path("etc/shared"), self.path("etc/missing-folder")])
        self.assertEqual(sorted(removed), sorted(planted))
        for path in planted:
            self.assertFalse(os.path.exists(path))
        for path in kept:
            self.assertTrue(os.path.exists(path), path)
        self.assertTrue(os.path.isdir(folderLike))

    def test_leftoversOfADroppedStager(self) -> None:
        """A stager that was never committed nor aborted (a killed process) leaves temporaries; they go."""
        put(self.root, "etc/lists/a", b"old")
        before = snapshot(self.root)
        stager = Stager(self.resolve, Unsafe)
        self.stage(stager, "etc/lists/a", b"new")
        stager.begin("etc/lists/b", 10, 0.0)
        stager.write(b"half")
        left = temporaries(self.root)
        self.assertEqual(len(left), 2)
        self.assertEqual(sorted(removeStaleTemporaries([self.path("etc")])), left)
        self.assertEqual(snapshot(self.root), before)


class NanosecondsTests(SynchronousTestCase):
    """The mtime a file is given: exact, as Fraction arithmetic says."""

    def test_sameAsFractions(self) -> None:
        import random
        from fractions import Fraction

        from wazuhcluster.sync.stager import _nanoseconds

        rng = random.Random(7)
        for seconds in [0.0, 1.5, 2.5e-9, 0.5e-9, 1.5e-9, 1_700_000_000.123456789] + [
            rng.uniform(0, 4e9) for _ in range(20_000)
        ]:
            self.assertEqual(_nanoseconds(seconds), round(Fraction(seconds) * 1_000_000_000), seconds)


class WholeFileTests(StagerTestCase):
    """Small files staged whole, many in one call (the bulk of a transfer)."""

    def test_stagedWholeThenCommitted(self) -> None:
        """
        Files staged whole wait in temporaries (named as the stale-file
        cleanup knows them) and land with their modes and times at the
        commit; a refused path is skipped, the others kept.
        """
        put(self.root, "etc/lists/old", b"old")
        stager = Stager(self.resolve, Unsafe)
        stager.stageWhole([
            ("etc/lists/old", 1_700_000_000.25, memoryview(b"new")),
            ("etc/shared/new/group/agent.conf", 1_600_000_000.5, b"<agent_config/>"),
            ("../outside", 1.0, b"no"),
            ("etc/lists/empty", 1_650_000_000.0, b""),
        ])
        self.assertEqual(self.read("etc/lists/old"), b"old")
        staged = temporaries(self.root)
        self.assertEqual(len(staged), 3)
        for path in staged:
            self.assertRegex(os.path.basename(path), _TEMPORARY_NAME)
        self.assertEqual(stager.refused[0][0], repr("../outside"))
        applied = stager.commit()
        self.assertEqual(
            sorted(applied.written), ["etc/lists/empty", "etc/lists/old", "etc/shared/new/group/agent.conf"]
        )
        self.assertEqual(self.read("etc/lists/old"), b"new")
        self.assertEqual(self.read("etc/lists/empty"), b"")
        st = os.stat(self.path("etc/shared/new/group/agent.conf"))
        self.assertEqual((st.st_mode & 0o7777, st.st_mtime_ns), (0o660, 1_600_000_000_500_000_000))
        st = os.stat(self.path("etc/lists/old"))
        self.assertEqual((st.st_mode & 0o7777, st.st_mtime_ns), (0o640, 1_700_000_000_250_000_000))
        self.assertEqual(temporaries(self.root), [])

    def test_modeWhateverTheUmask(self) -> None:
        """A umask that takes bits of the table's mode away: the files get the mode all the same."""
        previous = os.umask(0o077)
        try:
            stager = Stager(self.resolve, Unsafe)
            stager.stageWhole([("etc/shared/a", 1.0, b"a"), ("etc/shared/b", 1.0, b"b")])
            stager.commit()
        finally:
            os.umask(previous)
        for name in ("a", "b"):
            self.assertEqual(os.stat(self.path(f"etc/shared/{name}")).st_mode & 0o7777, 0o660)

    def test_laterRecordWins(self) -> None:
        """The same target twice, whole or streamed: the later record wins, one temporary is left."""
        stager = Stager(self.resolve, Unsafe)
        stager.stageWhole([("etc/lists/twice", 1.0, b"first")])
        self.stage(stager, "etc/lists/twice", b"second")
        stager.stageWhole([("etc/lists/twice", 1.0, b"third")])
        self.assertEqual(len(temporaries(self.root)), 1)
        stager.commit()
        self.assertEqual(self.read("etc/lists/twice"), b"third")

    def test_folderRemovedMeanwhile(self) -> None:
        """A folder made for one file and removed before the next: made again."""
        stager = Stager(self.resolve, Unsafe)
        stager.stageWhole([("etc/shared/g/one", 1.0, b"1")])
        for name in os.listdir(self.path("etc/shared/g")):
            os.unlink(self.path(f"etc/shared/g/{name}"))
        os.rmdir(self.path("etc/shared/g"))
        stager.stageWhole([("etc/shared/g/two", 1.0, b"2")])
        applied = stager.commit()
        self.assertEqual(applied.written, ("etc/shared/g/two",))
        self.assertEqual(sorted(a for a, _ in applied.failed), ["etc/shared/g/one"])
        self.assertEqual(self.read("etc/shared/g/two"), b"2")

    def test_abortRemovesEverything(self) -> None:
        """Aborted: the temporaries of files staged whole and the folders made for them go."""
        before = snapshot(self.root)
        stager = Stager(self.resolve, Unsafe)
        stager.stageWhole([("etc/shared/new/a", 1.0, b"a"), ("etc/lists/b", 1.0, b"b")])
        stager.abort()
        self.assertEqual(snapshot(self.root), before)
        self.assertRaises(StagingError, stager.stageWhole, [("etc/lists/c", 1.0, b"c")])

    def test_diskFull(self) -> None:
        """A write that fails: the error names the file, and its temporary is gone."""

        def full(fd: int, data: bytes | memoryview) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        stager = Stager(self.resolve, Unsafe, writeBytes=full)
        with self.assertRaises(StagingError) as e:
            stager.stageWhole([("etc/lists/big", 1.0, b"data")])
        self.assertIn("no space left on device while writing etc/lists/big", str(e.exception))
        self.assertEqual(temporaries(self.root), [])

    def test_contentProblem(self) -> None:
        """The content check sees a whole file's content, and refuses it without writing it."""
        seen = []

        def problem(relpath: str, content: bytes) -> str | None:
            seen.append((relpath, content))
            return "not a group list" if content != b"default\n" else None

        stager = Stager(self.resolve, Unsafe, contentProblem=problem)
        stager.stageWhole([("etc/lists/good", 1.0, b"default\n"), ("etc/lists/bad", 1.0, memoryview(b"rm -rf"))])
        self.assertEqual(seen, [("etc/lists/good", b"default\n"), ("etc/lists/bad", b"rm -rf")])
        self.assertEqual(stager.refused, [(repr("etc/lists/bad"), "not a group list")])
        self.assertEqual(stager.commit().written, ("etc/lists/good",))

    def test_targetsChecked(self) -> None:
        """
        Without C{targetsChecked} a folder in the way is refused here; with
        it the resolver is trusted to have said so, and a folder in the way
        fails at the commit, the other files applied.
        """
        os.makedirs(self.path("etc/lists/folder"))
        stager = Stager(self.resolve, Unsafe)
        stager.stageWhole([("etc/lists/folder", 1.0, b"x")])
        self.assertIn("a folder is in the way", stager.refused[0][1])
        stager.abort()
        stager = Stager(self.resolve, Unsafe, targetsChecked=True)
        stager.stageWhole([("etc/lists/folder", 1.0, b"x"), ("etc/lists/file", 1.0, b"y")])
        applied = stager.commit()
        self.assertEqual(applied.written, ("etc/lists/file",))
        self.assertEqual([a for a, _ in applied.failed], ["etc/lists/folder"])
        self.assertTrue(os.path.isdir(self.path("etc/lists/folder")))
        self.assertEqual(temporaries(self.root), [])
