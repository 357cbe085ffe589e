"""
The bundle: what the master writes is what the worker applies, whatever
the chunking; a damaged, hostile or cut stream changes nothing on the worker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.unit.test_sync_stager import (
    StagerTestCase,
    Unsafe,
    diskFullAfter,
    makeResolve,
    md5,
    put,
    snapshot,
    temporaries,
)
from wazuhcluster.sync import bundle as bundleModule
from wazuhcluster.sync.bundle import BundleError, BundleReader, BundleWriter, Limits
from wazuhcluster.sync.stager import Stager, StagingError, removeStaleTemporaries

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Raw records, for bundles no honest writer produces.


def fileRecord(
    path: bytes,
    content: bytes,
    mtime: float = 1_700_000_000.0,
    size: int | None = None,
    digest: bytes | None = None,
) -> bytes:
    """A file record; C{size} and C{digest} may lie."""
    size = len(content) if size is None else size
    digest = md5(content) if digest is None else digest
    return b"F" + struct.pack("!H", len(path)) + path + struct.pack("!Qd", size, mtime) + content + digest


def deleteRecord(path: bytes) -> bytes:
    """A delete record."""
    return b"D" + struct.pack("!H", len(path)) + path


def endRecord(files: int, deletions: int) -> bytes:
    """An end record; the counts may lie."""
    return b"E" + struct.pack("!II", files, deletions)


def pieces(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    """C{data} cut in pieces of the given sizes, the last size repeated to the end."""
    position = 0
    size = 1
    sizes = iter(sizes)
    while position < len(data):
        size = next(sizes, size)
        yield data[position : position + size]
        position += size


#: 1 byte at a time at first, then 7, then 64 KiB: every field boundary is crossed.
AWKWARD = [1] * 300 + [7] * 300 + [65536]


class BundleTestCase(StagerTestCase):
    """A worker home (the stager's) and a "master" folder to read files from."""

    def setUp(self) -> None:
        super().setUp()
        self.source = os.path.abspath(self.mktemp())
        os.makedirs(self.source)

    def sourceFile(self, relpath: str, data: bytes, mtimeNs: int | None = None) -> tuple[str, str]:
        """A file on the "master", and the pair a writer takes."""
        path = put(self.source, relpath, data)
        if mtimeNs is not None:
            os.utime(path, ns=(mtimeNs, mtimeNs))
        return relpath, path

    def reader(self, limits: Limits = Limits(), **kwargs: Any) -> tuple[Stager, BundleReader]:
        stager = Stager(self.resolve, Unsafe, **kwargs)
        return stager, BundleReader(stager, limits)

    def refusedBy(self, data: bytes, limits: Limits = Limits(), compress: bool = True) -> str:
        """Feed C{data} (records, compressed here unless told) and return the reader's complaint."""
        stager, reader = self.reader(limits)
        with self.assertRaises(BundleError) as e:
            for piece in pieces(zlib.compress(data) if compress else data, [5, 100, 65536]):
                reader.feed(piece)
            reader.finish()
        self.assertEqual(temporaries(self.root), [])
        self.assertRaises(BundleError, reader.feed, b"more")
        self.assertRaises(BundleError, reader.finish)
        return str(e.exception)


class RoundTripTests(BundleTestCase):
    def test_roundTrip(self) -> None:
        """
        Files of 0 B, 1 B, 100 KB and 5 MB, fed in awkward pieces, land
        byte for byte with their modes and times; deletions are done, and
        the folders they emptied pruned under the prune root only.
        """
        contents = {
            "etc/shared/default/empty": b"",
            "etc/shared/default/one": b"\x00",
            "etc/shared/new/group/hundred": os.urandom(100_000),
            "etc/lists/five": os.urandom(5_000_000),
        }
        times = {name: 1_650_000_000_123_456_789 + i * 1_000_000_007 for i, name in enumerate(contents)}
        files = [self.sourceFile(name, data, times[name]) for name, data in contents.items()]
        put(self.root, "etc/shared/default/one", b"old one")
        put(self.root, "etc/lists/five", b"old five")
        put(self.root, "etc/shared/old-group/sub/agent.conf", b"gone")
        put(self.root, "etc/shared/old-group/merged.mg", b"gone")
        put(self.root, "etc/shared/kept-group/gone", b"gone")
        put(self.root, "etc/shared/kept-group/kept", b"kept")
        put(self.root, "etc/lists/sub/gone", b"gone")
        deletions = [
            "etc/shared/old-group/sub/agent.conf",
            "etc/shared/old-group/merged.mg",
            "etc/shared/kept-group/gone",
            "etc/lists/sub/gone",
            "etc/lists/never-existed",
        ]
        writer = BundleWriter(files, deletions)
        stager, reader = self.reader()
        for piece in pieces(b"".join(writer.chunks()), AWKWARD):
            reader.feed(piece)
        result = reader.finish()
        self.assertEqual(result.files, tuple(contents))
        self.assertEqual(result.deletions, tuple(deletions))
        self.assertEqual(result.refused, ())
        self.assertEqual(result.bytesIn, writer.bytesOut)
        self.assertEqual(writer.sent, list(contents))
        self.assertEqual(writer.bytesIn, sum(map(len, contents.values())))
        applied = stager.commit()
        self.assertEqual(applied.written, tuple(contents))
        self.assertEqual(applied.deleted, tuple(deletions))
        self.assertEqual(
            sorted(applied.pruned), sorted([self.path("etc/shared/old-group/sub"), self.path("etc/shared/old-group")])
        )
        for name, data in contents.items():
            self.assertEqual(self.read(name), data, name)
            status = os.stat(self.path(name))
            self.assertEqual(status.st_mode & 0o7777, 0o660 if name.startswith("etc/shared") else 0o640)
            self.assertLessEqual(abs(status.st_mtime_ns - times[name]), 1000, name)
        for name in deletions:
            self.assertFalse(os.path.exists(self.path(name)))
        self.assertEqual(sorted(os.listdir(self.path("etc/shared"))), ["default", "kept-group", "new"])
        self.assertEqual(os.listdir(self.path("etc/shared/kept-group")), ["kept"])
        self.assertTrue(os.path.isdir(self.path("etc/lists/sub")))
        self.assertEqual(temporaries(self.root), [])

    def test_oneFeedOfEverything(self) -> None:
        """The whole bundle in one call works as well as in pieces."""
        data = os.urandom(300_000)
        writer = BundleWriter([self.sourceFile("etc/lists/a", data)], [])
        stager, reader = self.reader()
        reader.feed(b"".join(writer.chunks()))
        reader.finish()
        stager.commit()
        self.assertEqual(self.read("etc/lists/a"), data)

    def test_emptyBundle(self) -> None:
        """No files and no deletions is a valid bundle."""
        writer = BundleWriter([], [])
        chunks = list(writer.chunks())
        self.assertEqual(len(chunks), 1)
        stager, reader = self.reader()
        reader.feed(chunks[0])
        result = reader.finish()
        self.assertEqual((result.files, result.deletions), ((), ()))
        self.assertEqual(stager.commit().written, ())

    def test_chunkSizes(self) -> None:
        """No chunk is ever larger than asked, nor empty."""
        files = [
            self.sourceFile("etc/lists/random", os.urandom(200_000)),
            self.sourceFile("etc/lists/zeros", bytes(300_000)),
        ]
        for chunkSize in (1, 100, 4096, 32 * 1024, 60_000):
            writer = BundleWriter(files, ["etc/lists/x"] * 50, chunkSize=chunkSize)
            chunks = list(writer.chunks())
            self.assertTrue(chunks)
            self.assertLessEqual(max(map(len, chunks)), chunkSize)
            self.assertNotIn(b"", chunks)
            self.assertEqual({len(c) for c in chunks[:-1]} - {chunkSize}, set())
            self.assertEqual(sum(map(len, chunks)), writer.bytesOut)
        self.assertRaises(ValueError, BundleWriter, [], [], chunkSize=0)

    def test_smallDecompressionSteps(self) -> None:
        """
        Output still inside zlib after it consumed all the input is not
        forgotten (the reader steps are tiny here, so that happens often).
        """
        self.patch(bundleModule, "_DECOMPRESS_STEP", 7)
        contents = {"etc/lists/zeros": bytes(20_000), "etc/lists/text": b"abcabcabd" * 3000, "etc/lists/e": b""}
        files = [self.sourceFile(name, data) for name, data in contents.items()]
        data = b"".join(BundleWriter(files, ["etc/lists/x"]).chunks())
        for sizes in ([1], [3], [len(data)]):
            stager, reader = self.reader()
            for piece in pieces(data, sizes):
                reader.feed(piece)
            self.assertEqual(reader.finish().files, tuple(contents))
            stager.commit()
            for name, content in contents.items():
                self.assertEqual(self.read(name), content)

    def test_chunksOnce(self) -> None:
        writer = BundleWriter([], [])
        list(writer.chunks())
        self.assertRaises(RuntimeError, list, writer.chunks())

    def roundTripMemory(self, data: bytes | None, size: int) -> tuple[int, float]:
        """
        Send and apply one file of C{size} bytes (C{data}, or a sparse file
        of zeros), chunk by chunk, and return the peak of memory traced and
        the seconds it took.
        """
        source = os.path.join(self.source, "big")
        with open(source, "wb") as f:
            if data is None:
                f.truncate(size)
            else:
                f.write(data)
        del data
        writer = BundleWriter([("etc/lists/big", source)], [])
        stager, reader = self.reader()
        largest = 0
        started = time.monotonic()
        tracemalloc.start()
        try:
            for chunk in writer.chunks():
                largest = max(largest, len(chunk))
                reader.feed(chunk)
            reader.finish()
            stager.commit()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        elapsed = time.monotonic() - started
        self.assertLessEqual(largest, 32 * 1024)
        self.assertEqual(os.path.getsize(self.path("etc/lists/big")), size)
        digest = hashlib.md5()
        with open(source, "rb") as a, open(self.path("etc/lists/big"), "rb") as b:
            while block := a.read(1 << 20):
                digest.update(block)
                self.assertEqual(b.read(len(block)), block)
        return peak, elapsed

    def test_memoryBoundedCompressible(self) -> None:
        """50 MB of zeros (a compression ratio of 1000) go through in a few MB of memory."""
        peak, elapsed = self.roundTripMemory(None, 50_000_000)
        self.assertLess(peak, 20_000_000, f"peak {peak} bytes in {elapsed:.1f} s")

    def test_memoryBoundedIncompressible(self) -> None:
        """So do 50 MB of random bytes."""
        peak, elapsed = self.roundTripMemory(os.urandom(50_000_000), 50_000_000)
        self.assertLess(peak, 20_000_000, f"peak {peak} bytes in {elapsed:.1f} s")


class LimitTests(BundleTestCase):
    def test_declaredFileTooLarge(self) -> None:
        """A file declared one byte over the limit is refused at its header, before anything is written."""
        limits = Limits()
        header = fileRecord(b"etc/lists/huge", b"", size=limits.maxFileSize + 1, digest=b"")
        complaint = self.refusedBy(header + bytes(1000))
        self.assertIn(
            f"etc/lists/huge with {limits.maxFileSize + 1} bytes, over the limit of {limits.maxFileSize}", complaint
        )
        self.assertFalse(os.path.exists(self.path("etc/lists/huge")))

    def test_declaredFilesOverTotal(self) -> None:
        """Files that would take the bundle over its total are refused before they are written."""
        put(self.root, "etc/lists/a", b"old")
        limits = Limits(maxTotalBytes=1_000_000)
        data = fileRecord(b"etc/lists/a", bytes(600_000)) + fileRecord(b"etc/lists/b", bytes(600_000))
        complaint = self.refusedBy(data, limits)
        self.assertIn("etc/lists/b with 600000 bytes, which would take it over the limit of 1000000", complaint)
        self.assertEqual(self.read("etc/lists/a"), b"old")
        self.assertFalse(os.path.exists(self.path("etc/lists/b")))

    def test_decompressedOverTotal(self) -> None:
        """Small records that decompress past the total are refused too; nothing is committed."""
        put(self.root, "etc/lists/a", b"old")
        limits = Limits(maxTotalBytes=1_000_000)
        data = fileRecord(b"etc/lists/a", b"new") + b"".join(
            deleteRecord(b"etc/lists/" + b"x" * 4000) for _ in range(300)
        )
        complaint = self.refusedBy(data, limits)
        self.assertIn("decompresses to more than 1000000 bytes", complaint)
        self.assertEqual(self.read("etc/lists/a"), b"old")

    def test_bombMemory(self) -> None:
        """
        A small compressed input that inflates to 100 MB is decoded a step
        at a time: memory stays at a few MB even when it comes in one piece.
        """
        compressor = zlib.compressobj(9)
        header = fileRecord(b"etc/refused/zeros", b"", size=100 << 20, digest=b"")
        parts = [compressor.compress(header)]
        block = bytes(1 << 20)
        digest = hashlib.md5()
        for _ in range(100):
            parts.append(compressor.compress(block))
            digest.update(block)
        parts.append(compressor.compress(digest.digest() + endRecord(1, 0)) + compressor.flush())
        bomb = b"".join(parts)
        del parts, block
        self.assertLess(len(bomb), 200_000)
        stager, reader = self.reader()
        tracemalloc.start()
        try:
            reader.feed(bomb)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, len(bomb) + 4_000_000)
        result = reader.finish()
        self.assertEqual(result.bytesOut, len(header) + (100 << 20) + 16 + 9)
        self.assertEqual(len(result.refused), 1)

    def test_tooManyRecords(self) -> None:
        data = b"".join(deleteRecord(b"etc/lists/%d" % i) for i in range(4)) + endRecord(0, 4)
        self.assertIn("more than 3 records", self.refusedBy(data, Limits(maxRecords=3)))

    def test_pathTooLong(self) -> None:
        complaint = self.refusedBy(deleteRecord(b"etc/lists/" + b"x" * 20) + endRecord(0, 1), Limits(maxPathBytes=20))
        self.assertIn("a path of 30 bytes, over the limit of 20", complaint)


class HostileTests(BundleTestCase):
    def test_refusedPathsSkipped(self) -> None:
        """Paths the policy refuses are skipped and listed; the other files still land."""
        data = os.urandom(70_000)
        files = [
            self.sourceFile("etc/lists/before", b"before"),
            self.sourceFile("etc/ossec.conf", data),
            self.sourceFile("etc/lists/after", b"after"),
        ]
        outside = os.path.join(os.path.dirname(self.root), "outside")
        raw = (
            fileRecord(b"etc/lists/../../outside", b"evil")
            + fileRecord(b"etc/lists/ok", b"ok")
            + deleteRecord(b"/etc/passwd")
            + endRecord(2, 1)
        )
        stager, reader = self.reader()
        for chunk in BundleWriter(files, ["etc/client.keys"]).chunks():
            reader.feed(chunk)
        result = reader.finish()
        stager.commit()
        self.assertEqual(result.files, ("etc/lists/before", "etc/lists/after"))
        self.assertEqual(
            [path for path, _ in result.refused], [repr("etc/ossec.conf"), repr("etc/client.keys")]
        )
        self.assertIn("is not a path the cluster synchronises", result.refused[0][1])
        self.assertEqual(self.read("etc/lists/after"), b"after")
        self.assertFalse(os.path.exists(self.path("etc/ossec.conf")))

        stager, reader = self.reader()
        reader.feed(zlib.compress(raw))
        result = reader.finish()
        stager.commit()
        self.assertEqual(result.files, ("etc/lists/ok",))
        self.assertEqual(len(result.refused), 2)
        self.assertFalse(os.path.exists(outside))
        self.assertEqual(self.read("etc/lists/ok"), b"ok")

    def test_truncated(self) -> None:
        """A stream cut anywhere, even in zlib's trailer, is refused at finish() and leaves nothing."""
        put(self.root, "etc/lists/a", b"old")
        before = snapshot(self.root)
        whole = b"".join(
            BundleWriter([self.sourceFile("etc/lists/a", os.urandom(50_000))], ["etc/lists/b"], chunkSize=1000).chunks()
        )
        for cut in (0, 1, 2, 100, len(whole) // 2, len(whole) - 5, len(whole) - 1):
            stager, reader = self.reader()
            reader.feed(whole[:cut])
            with self.assertRaises(BundleError) as e:
                reader.finish()
            self.assertIn("cut short", str(e.exception))
            self.assertEqual(snapshot(self.root), before, cut)

    def test_truncatedNamesTheFile(self) -> None:
        data = zlib.compressobj()
        partial = data.compress(fileRecord(b"etc/lists/a", bytes(1000))[:500]) + data.flush(zlib.Z_SYNC_FLUSH)
        stager, reader = self.reader()
        reader.feed(partial)
        with self.assertRaises(BundleError) as e:
            reader.finish()
        self.assertIn("the bundle was cut short in the middle of etc/lists/a (470 of 1000 bytes arrived)", str(e.exception))

    def test_checksumMismatch(self) -> None:
        """A file whose content does not match its MD5 is named, whether or not it was to be written."""
        put(self.root, "etc/lists/a", b"old")
        for path in (b"etc/lists/a", b"etc/not-synchronised"):
            complaint = self.refusedBy(fileRecord(path, b"new content", digest=md5(b"other")) + endRecord(1, 0))
            self.assertIn(f"the content of {path.decode()} does not match its MD5 checksum", complaint)
        self.assertEqual(self.read("etc/lists/a"), b"old")

    def test_notCompressed(self) -> None:
        self.assertIn(
            "not a valid compressed stream", self.refusedBy(b"this is no zlib stream at all", compress=False)
        )

    def test_unknownRecord(self) -> None:
        self.assertIn("unknown type b'X'", self.refusedBy(b"X" + bytes(100)))

    def test_dataAfterEndRecord(self) -> None:
        complaint = self.refusedBy(deleteRecord(b"etc/lists/a") + endRecord(0, 1) + b"D")
        self.assertIn("data follows the end record", complaint)

    def test_dataAfterCompressedStream(self) -> None:
        """Nothing may follow the compressed stream either, not even another valid one."""
        valid = zlib.compress(endRecord(0, 0))
        for extra in (b"\x00", valid):
            complaint = self.refusedBy(valid + extra, compress=False)
            self.assertIn("data follows the end of the compressed bundle", complaint)

    def test_dataAfterCompressedStreamInALaterFeed(self) -> None:
        stager, reader = self.reader()
        reader.feed(zlib.compress(endRecord(0, 0)))
        self.assertRaises(BundleError, reader.feed, b"x")

    def test_wrongCounts(self) -> None:
        for counts in ((2, 0), (1, 1), (0, 0)):
            complaint = self.refusedBy(fileRecord(b"etc/lists/a", b"a") + endRecord(*counts))
            self.assertIn(f"counts {counts[0]} files and {counts[1]} deletions but it holds 1 and 0", complaint)

    def test_pathNotUtf8(self) -> None:
        self.assertIn("a path that is not UTF-8 (b'etc/lists/\\xff')", self.refusedBy(deleteRecord(b"etc/lists/\xff")))

    def test_emptyPath(self) -> None:
        self.assertIn("empty path", self.refusedBy(deleteRecord(b"") + endRecord(0, 1)))

    def test_nulInPath(self) -> None:
        self.assertIn("NUL", self.refusedBy(fileRecord(b"etc/lists/a\x00b", b"") + endRecord(1, 0)))

    def test_impossibleTime(self) -> None:
        for mtime in (float("nan"), float("inf"), 1e300):
            complaint = self.refusedBy(fileRecord(b"etc/lists/a", b"", mtime=mtime))
            self.assertIn("impossible modification time", complaint)

    def test_errorMidFileRemovesTheTemporary(self) -> None:
        """The reader aborts the stager itself: a temporary being written is removed at once."""
        put(self.root, "etc/lists/a", b"old")
        record = fileRecord(b"etc/lists/a", bytes(10_000), digest=b"\x00" * 16) + endRecord(1, 0)
        compressor = zlib.compressobj()
        stager, reader = self.reader()
        reader.feed(compressor.compress(record[:5000]) + compressor.flush(zlib.Z_SYNC_FLUSH))
        self.assertEqual(len(temporaries(self.root)), 1)
        self.assertRaises(BundleError, reader.feed, compressor.compress(record[5000:]) + compressor.flush())
        self.assertEqual(temporaries(self.root), [])
        self.assertEqual(self.read("etc/lists/a"), b"old")

    def test_stagedFilesRemovedOnLaterError(self) -> None:
        """Files already staged when a later record is bad are not committed, and their temporaries go."""
        put(self.root, "etc/lists/a", b"old")
        before = snapshot(self.root)
        stager, reader = self.reader()
        compressor = zlib.compressobj()
        good = compressor.compress(fileRecord(b"etc/lists/a", b"new") + fileRecord(b"etc/shared/g/b", b"new"))
        reader.feed(good + compressor.flush(zlib.Z_SYNC_FLUSH))
        self.assertEqual(len(temporaries(self.root)), 2)
        self.assertRaises(BundleError, reader.feed, compressor.compress(b"?") + compressor.flush())
        self.assertEqual(snapshot(self.root), before)
        stager.abort()
        self.assertEqual(snapshot(self.root), before)


class ChangedWhileReadTests(BundleTestCase):
    """
    A file that changes while the writer reads it is left out of the
    stream whole, and goes in the next round.
    """

    def sendWhileChanging(self, change: Any) -> tuple[BundleWriter, bytes]:
        """
        Send three files; the middle one is changed by C{change(path)}
        right after the writer read its first block.
        """
        files = [
            self.sourceFile("etc/lists/before", b"before"),
            self.sourceFile("etc/lists/changing", os.urandom(300_000), mtimeNs=1_600_000_000_000_000_000),
            self.sourceFile("etc/lists/after", b"after"),
        ]
        changing = files[1][1]
        realOpen = open

        class Reading:
            def __init__(self, file: Any) -> None:
                self.file = file
                self.blocks = 0

            def read(self, size: int) -> bytes:
                block = self.file.read(size)
                self.blocks += 1
                if self.blocks == 1:
                    change(changing)
                return block

            def __getattr__(self, name: str) -> Any:
                return getattr(self.file, name)

            def __enter__(self) -> Reading:
                return self

            def __exit__(self, *exc: object) -> None:
                self.file.close()

        def fakeOpen(path: str | int, *args: Any, **kwargs: Any) -> Any:
            # The writer opens a large file by its descriptor.
            name = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else path
            opened = realOpen(path, *args, **kwargs)
            return Reading(opened) if name == changing else opened

        put(self.root, "etc/lists/changing", b"old version")
        writer = BundleWriter(files, [])
        # The writer's module sees this open() before the built-in one.
        bundleModule.open = fakeOpen  # type: ignore[attr-defined]
        try:
            data = b"".join(writer.chunks())
        finally:
            del bundleModule.open  # type: ignore[attr-defined]
        stager, reader = self.reader()
        reader.feed(data)
        result = reader.finish()
        stager.commit()
        self.assertEqual(writer.sent, ["etc/lists/before", "etc/lists/after"])
        self.assertEqual(writer.skipped, ["etc/lists/changing"])
        self.assertEqual(result.files, ("etc/lists/before", "etc/lists/after"))
        self.assertNotIn(b"changing", zlib.decompress(data))
        self.assertEqual(self.read("etc/lists/changing"), b"old version")
        self.assertEqual(self.read("etc/lists/after"), b"after")
        return writer, data

    def nextRoundSends(self, relpath: str) -> None:
        """Once it is stable, the file goes through."""
        source = os.path.join(self.source, relpath)
        writer = BundleWriter([(relpath, source)], [])
        stager, reader = self.reader()
        for chunk in writer.chunks():
            reader.feed(chunk)
        reader.finish()
        stager.commit()
        with open(source, "rb") as f:
            self.assertEqual(self.read(relpath), f.read())

    def test_appended(self) -> None:
        def append(path: str) -> None:
            with open(path, "ab") as f:
                f.write(b"more")

        self.sendWhileChanging(append)
        self.nextRoundSends("etc/lists/changing")

    def test_truncated(self) -> None:
        self.sendWhileChanging(lambda path: os.truncate(path, 1000))
        self.nextRoundSends("etc/lists/changing")

    def test_rewrittenSameSizeAndTimeRestored(self) -> None:
        """Same size, and the modification time put back: the change time still tells."""

        def rewrite(path: str) -> None:
            with open(path, "r+b") as f:
                f.seek(200_000)
                f.write(b"changed")
            os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))

        self.sendWhileChanging(rewrite)
        self.nextRoundSends("etc/lists/changing")

    def test_replaced(self) -> None:
        """Replaced by a rename: the old content read whole is out of date, so it is not sent."""

        def replace(path: str) -> None:
            with open(path + ".new", "wb") as f:
                f.write(b"replacement")
            os.replace(path + ".new", path)

        self.sendWhileChanging(replace)
        self.nextRoundSends("etc/lists/changing")

    def test_deleted(self) -> None:
        self.sendWhileChanging(os.unlink)

    def test_pseudoFile(self) -> None:
        """A file that does not hold what its size says (/proc) is not sent, and the bundle stays valid."""
        good = self.sourceFile("etc/lists/good", b"good")
        writer = BundleWriter([("etc/lists/status", "/proc/self/status"), good], [])
        stager, reader = self.reader()
        for chunk in writer.chunks():
            reader.feed(chunk)
        self.assertEqual(reader.finish().files, ("etc/lists/good",))
        self.assertEqual(writer.skipped, [])
        self.assertEqual(writer.failed, [("etc/lists/status", "/proc/self/status does not hold the 0 bytes its size says")])

    def test_vanishedBeforeRead(self) -> None:
        writer = BundleWriter([("etc/lists/gone", os.path.join(self.source, "nothing-here"))], [])
        list(writer.chunks())
        self.assertEqual((writer.sent, writer.skipped), ([], ["etc/lists/gone"]))

    def test_cannotBeSent(self) -> None:
        """
        A folder, a named pipe (not waited on), a name that is not UTF-8 or
        is too long: listed in C{failed}, the rest goes.
        """
        good = self.sourceFile("etc/lists/good", b"good")
        fifo = os.path.join(self.source, "fifo")
        os.mkfifo(fifo)
        writer = BundleWriter(
            [
                ("etc/lists/folder", self.source),
                ("etc/lists/fifo", fifo),
                ("etc/lists/\udcff", good[1]),
                ("etc/lists/" + "x" * 70_000, good[1]),
                good,
            ],
            ["etc/lists/\udcfe"],
        )
        stager, reader = self.reader()
        for chunk in writer.chunks():
            reader.feed(chunk)
        self.assertEqual(reader.finish().files, ("etc/lists/good",))
        self.assertEqual(writer.sent, ["etc/lists/good"])
        reasons = dict(writer.failed)
        self.assertEqual(len(writer.failed), 5)
        self.assertEqual(reasons["etc/lists/fifo"], f"{fifo} is not a regular file")
        self.assertEqual(reasons["etc/lists/folder"], f"{self.source} is not a regular file")
        self.assertEqual(reasons["etc/lists/\udcff"], "its name is not valid UTF-8")
        self.assertIn("(1 to 65535 can be sent)", reasons["etc/lists/" + "x" * 70_000])


class InterruptionTests(BundleTestCase):
    def bundle(self) -> bytes:
        files = [
            self.sourceFile("etc/shared/default/agent.conf", b"new conf"),
            self.sourceFile("etc/shared/newgroup/agent.conf", b"new group"),
            self.sourceFile("etc/lists/big", os.urandom(2_000_000)),
            self.sourceFile("etc/lists/z", b"last"),
        ]
        return b"".join(BundleWriter(files, ["etc/lists/old"]).chunks())

    def oldFiles(self) -> dict[str, tuple[bytes | None, int]]:
        put(self.root, "etc/shared/default/agent.conf", b"old conf")
        put(self.root, "etc/lists/big", b"old big")
        put(self.root, "etc/lists/old", b"old")
        return snapshot(self.root)

    def test_diskFull(self) -> None:
        """The disk fills up mid-transfer: a clear error, the old files intact, no temporaries."""
        before = self.oldFiles()
        data = self.bundle()
        stager, reader = self.reader(writeBytes=diskFullAfter(1_000_000))
        with self.assertRaises(StagingError) as e:
            for chunk in pieces(data, [32 * 1024]):
                reader.feed(chunk)
        self.assertRegex(
            str(e.exception),
            r"^no space left on device while writing etc/lists/big \(\d+ bytes written\):"
            r" the transfer was abandoned and the previous files kept$",
        )
        self.assertEqual(snapshot(self.root), before)
        stager.abort()
        self.assertEqual(snapshot(self.root), before)
        self.assertIn("no space left on device", str(self.assertRaises(BundleError, reader.finish)))

    def test_cutHalfway(self) -> None:
        """Half a bundle, then the link is lost: abort leaves the old files and no temporaries."""
        before = self.oldFiles()
        data = self.bundle()
        stager, reader = self.reader()
        reader.feed(data[: len(data) // 2])
        self.assertNotEqual(temporaries(self.root), [])
        stager.abort()
        self.assertEqual(snapshot(self.root), before)

    def test_killedHalfway(self) -> None:
        """
        A process killed halfway leaves temporaries (and nothing else);
        removeStaleTemporaries at the next start removes exactly those.
        """
        before = self.oldFiles()
        data = self.bundle()
        bundlePath = os.path.join(self.source, "bundle")
        with open(bundlePath, "wb") as f:
            f.write(data[: len(data) // 2])
        script = (
            "import os, signal, sys\n"
            f"sys.path.insert(0, {REPOSITORY!r})\n"
            "from tests.unit.test_sync_stager import Unsafe, makeResolve\n"
            "from wazuhcluster.sync.bundle import BundleReader\n"
            "from wazuhcluster.sync.stager import Stager\n"
            f"reader = BundleReader(Stager(makeResolve({self.root!r}), Unsafe))\n"
            f"reader.feed(open({bundlePath!r}, 'rb').read())\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        process = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        self.assertEqual(process.returncode, -signal.SIGKILL, process.stderr.decode())
        left = temporaries(self.root)
        self.assertGreaterEqual(len(left), 2)
        self.assertEqual(sorted(removeStaleTemporaries([self.path("etc/shared"), self.path("etc/lists")])), left)
        after = snapshot(self.root)
        # The only other trace: the empty folder made for the new group.
        self.assertEqual(after.pop("etc/shared/newgroup")[0], None)
        self.assertEqual(after, before)


class PropertyTests(BundleTestCase):
    """Hypothesis: any input is either a bundle or a BundleError, and never leaves temporaries."""

    def freshRoot(self) -> str:
        root = tempfile.mkdtemp(dir=os.path.dirname(self.root))
        os.makedirs(os.path.join(root, "etc", "lists"))
        self.addCleanup(shutil.rmtree, root, True)
        return root

    def feedAll(self, root: str, data: bytes, splits: list[int]) -> Exception | None:
        stager = Stager(makeResolve(root), Unsafe)
        reader = BundleReader(stager, Limits(maxTotalBytes=1 << 20))
        try:
            for piece in pieces(data, splits or [len(data) or 1]):
                reader.feed(piece)
            reader.finish()
        except BundleError as e:
            stager.abort()
            return e
        stager.commit()
        return None

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=3000), st.lists(st.integers(1, 500), max_size=20))
    def test_randomBytes(self, data: bytes, splits: list[int]) -> None:
        root = self.freshRoot()
        self.assertIsInstance(self.feedAll(root, data, splits), BundleError)
        self.assertEqual(temporaries(root), [])

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(st.sampled_from(["F", "D"]), st.text("ab/", min_size=1, max_size=6), st.binary(max_size=300)),
            max_size=6,
        ),
        st.integers(0, 2000),
        st.integers(0, 255),
        st.lists(st.integers(1, 300), max_size=10),
    )
    def test_damagedBundles(
        self, records: list[tuple[str, str, bytes]], where: int, xor: int, splits: list[int]
    ) -> None:
        """Valid records (some refused by the policy), then one byte damaged or the stream cut."""
        raw = b"".join(
            fileRecord(b"etc/lists/" + p.encode(), c) if kind == "F" else deleteRecord(b"etc/lists/" + p.encode())
            for kind, p, c in records
        )
        raw += endRecord(sum(k == "F" for k, _, _ in records), sum(k == "D" for k, _, _ in records))
        data = bytearray(zlib.compress(raw))
        if where < len(data) and xor:
            data[where] ^= xor
        else:
            del data[where % (len(data) + 1) :]
        root = self.freshRoot()
        self.feedAll(root, bytes(data), splits)
        self.assertEqual(temporaries(root), [])

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.dictionaries(st.text("abc", min_size=1, max_size=4), st.binary(max_size=70_000), max_size=6),
        st.sampled_from([1, 17, 1000, 32 * 1024]),
        st.lists(st.integers(1, 5000), max_size=10),
    )
    def test_roundTrip(self, contents: dict[str, bytes], chunkSize: int, splits: list[int]) -> None:
        source = self.freshRoot()
        root = self.freshRoot()
        files = [("etc/lists/" + name, put(source, name, data)) for name, data in contents.items()]
        data = b"".join(BundleWriter(files, [], chunkSize=chunkSize).chunks())
        self.assertIsNone(self.feedAll(root, data, splits))
        for name, content in contents.items():
            with open(os.path.join(root, "etc", "lists", name), "rb") as f:
                self.assertEqual(f.read(), content)
        self.assertEqual(temporaries(root), [])


class ManySmallFilesTests(BundleTestCase):
    """
    The reader takes the small records that lie whole in a block together;
    those cut by a block's end, the large ones and the others go field by
    field: the outcome is the same.
    """

    def bundleOf(self, count: int) -> tuple[bytes, dict[str, bytes]]:
        contents = {f"etc/shared/g{i % 7}/f{i:05d}": b"default\n" * (i % 5) for i in range(count)}
        contents["etc/lists/big"] = os.urandom(bundleModule._WHOLE_FILE + 1)
        records = [fileRecord(p.encode(), c, 1_700_000_000.0 + i) for i, (p, c) in enumerate(contents.items())]
        put(self.root, "etc/shared/g1/gone", b"gone")
        # A deletion among the files, and a file named again later: records apply in order.
        records.insert(count // 2, deleteRecord(b"etc/shared/g1/gone"))
        records.append(fileRecord(b"etc/shared/g0/f00000", b"again", 1.5))
        contents["etc/shared/g0/f00000"] = b"again"
        return b"".join(records) + endRecord(len(contents) + 1, 1), contents

    def test_manySmallFiles(self) -> None:
        data, contents = self.bundleOf(3000)
        for sizes in ([65536], [1] * 50 + [1000], [4096]):
            with self.subTest(sizes=sizes[:2]):
                stager, reader = self.reader()
                for piece in pieces(zlib.compress(data), sizes):
                    reader.feed(piece)
                result = reader.finish()
                self.assertEqual(result.deletions, ("etc/shared/g1/gone",))
                applied = stager.commit()
                self.assertEqual(len(applied.written), len(contents))
                for relpath, content in contents.items():
                    self.assertEqual(self.read(relpath), content)
                self.assertEqual(os.stat(self.path("etc/shared/g0/f00000")).st_mtime_ns, 1_500_000_000)
                self.assertFalse(os.path.exists(self.path("etc/shared/g1/gone")))
                self.assertEqual(temporaries(self.root), [])
                put(self.root, "etc/shared/g1/gone", b"gone")

    def test_damagedSmallFile(self) -> None:
        """A small file among many whose MD5 is wrong: the bundle is refused, nothing is left."""
        good = b"".join(fileRecord(f"etc/shared/g/f{i}".encode(), b"default\n") for i in range(100))
        bad = fileRecord(b"etc/shared/g/bad", b"default\n", digest=md5(b"other\n"))
        message = self.refusedBy(good + bad + good + endRecord(201, 0))
        self.assertIn("the content of etc/shared/g/bad does not match its MD5 checksum", message)
        self.assertFalse(os.path.exists(self.path("etc/shared/g")))

    def test_refusedSmallFileSkipped(self) -> None:
        """A small file the policy refuses, among others: skipped, its checksum still checked."""
        records = [fileRecord(b"etc/shared/g/a", b"a"), fileRecord(b"outside/x", b"x"), fileRecord(b"etc/shared/g/b", b"b")]
        stager, reader = self.reader()
        reader.feed(zlib.compress(b"".join(records) + endRecord(3, 0)))
        result = reader.finish()
        self.assertEqual(result.files, ("etc/shared/g/a", "etc/shared/g/b"))
        self.assertEqual([path for path, _ in result.refused], [repr("outside/x")])
        self.assertEqual(stager.commit().written, ("etc/shared/g/a", "etc/shared/g/b"))
        bad = fileRecord(b"outside/x", b"x", digest=md5(b"y"))
        self.assertIn("does not match its MD5 checksum", self.refusedBy(bad + endRecord(1, 0)))

    def test_smallFileChangedWhileRead(self) -> None:
        """A small file replaced right after its one read: skipped, the others sent."""
        files = [self.sourceFile(f"etc/lists/{name}", name.encode()) for name in ("before", "changing", "after")]
        changing = files[1][1]

        class ReplacingOs:
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            def read(self, fd: int, size: int) -> bytes:
                data = os.read(fd, size)
                if os.readlink(f"/proc/self/fd/{fd}") == changing:
                    put(os.path.dirname(changing), "new", b"replacement")
                    os.replace(os.path.join(os.path.dirname(changing), "new"), changing)
                return data

        self.patch(bundleModule, "os", ReplacingOs())
        writer = BundleWriter(files, [])
        data = b"".join(writer.chunks())
        self.assertEqual((writer.sent, writer.skipped), (["etc/lists/before", "etc/lists/after"], ["etc/lists/changing"]))
        self.assertNotIn(b"changing", zlib.decompress(data))
