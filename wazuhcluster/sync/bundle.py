"""
The bundle: every file a worker lacks, and every file it must delete, in one
compressed stream.

The master writes one zlib stream of records; the network layer cuts it into
chunks small enough for AMP (a value holds at most 65,535 bytes) and the
worker feeds them, in order, to a L{BundleReader}, which hands each file to a
L{Stager} as it arrives.  Records, big-endian::

    file:    b"F", u16 path length, path (UTF-8), u64 size, f64 mtime (seconds),
             <size> bytes of content, 16 bytes MD5 of the content
    delete:  b"D", u16 path length, path (UTF-8)
    end:     b"E", u32 number of file records, u32 number of delete records

Nothing may follow the end record, neither in the records nor in the
compressed stream.  zlib's own checksum covers the whole stream; the MD5 of
each file tells which file was damaged, and checks a file before it can
replace a good one.

A master is trusted to say which files to send, not to be well-behaved: the
reader caps the size of one file, the total decompressed size (a compression
bomb never allocates more than a few hundred KiB at a time, and is refused
before it fills a disk) and the number of records.

A file that changes while the master reads it
=============================================

The content of a record comes after its size and before its MD5, and the
stream cannot take back what it has already sent.  So the writer never reads
a file into the stream directly: it first copies it to a spool (in memory up
to C{spoolMemory} bytes, in an anonymous temporary file beyond that, so memory
stays bounded for a file of any size), hashing it on the way, with a
C{fstat} before and after the copy and a C{stat} of the path after it.  If
the size, modification time, change time or inode moved, or the bytes read
are not the size announced, the file was being written (or replaced, or
removed) meanwhile: it goes to L{BundleWriter.skipped}, its record never
appears in the stream, and the next synchronisation round sends it.  Only a
stable snapshot is sent, from the spool, so what the worker receives is
always a version of the file that existed as a whole.  The cost is one extra
local copy of each large file on the master (a sequential write the page
cache mostly absorbs), in exchange for a simple rule on the worker: a bad
checksum always means a corrupt stream.

A write that changes neither size nor any timestamp (within one tick of the
file system's clock) cannot be seen by any stat; the next round's checksum
comparison then notices the difference and sends the file again.

This module does blocking I/O and knows nothing of Twisted: the network
layer runs L{BundleWriter.chunks} and L{BundleReader.feed} in a thread.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from attrs import frozen

from wazuhcluster.sync.stager import ChecksumMismatch, Stager, showPath

__all__ = [
    "BundleError",
    "BundleReader",
    "BundleResult",
    "BundleWriter",
    "Limits",
]

_PATH_LENGTH = struct.Struct("!H")
_SIZE_MTIME = struct.Struct("!Qd")
_COUNTS = struct.Struct("!II")
_MD5_SIZE = 16
_FILE = b"F"
_DELETE = b"D"
_END = b"E"
_FILE_BYTE = _FILE[0]
_DELETE_BYTE = _DELETE[0]

#: Most decompressed bytes produced by one step of the reader.
_DECOMPRESS_STEP = 256 * 1024
#: Most compressed bytes given to one step of the reader (bounds the copies
#: zlib makes of the unconsumed input).
_INPUT_SLICE = 64 * 1024
#: Files up to this size that lie whole in one decompressed step are staged
#: in one call with their neighbours (most synchronised files are small); the
#: larger ones are written as they arrive.
_WHOLE_FILE = 64 * 1024
#: Bytes read from a file at a time by the writer.
_READ_BLOCK = 128 * 1024
#: Modification times must fit in a signed 64-bit count of nanoseconds.
_MTIME_LIMIT = (1 << 63) / 1e9


class BundleError(Exception):
    """
    A bundle was refused: malformed, truncated, over a limit, or with a
    damaged file.  C{str(err)} is one sentence for the log.
    """


@frozen
class Limits:
    """
    What a worker accepts from one bundle, so that a damaged or hostile
    master cannot exhaust its memory or disk.

    @ivar maxFileSize: the largest size a file record may declare.
    @ivar maxTotalBytes: the most decompressed bytes (records and contents).
    @ivar maxRecords: the most file and delete records.
    @ivar maxPathBytes: the longest path, in bytes of UTF-8.
    """

    maxFileSize: int = 1 << 31
    maxTotalBytes: int = 1 << 34
    maxRecords: int = 500_000
    maxPathBytes: int = 4096


@frozen
class BundleResult:
    """
    A bundle that arrived whole and checked out, staged and ready for
    L{Stager.commit}.

    @ivar files: the files staged, as the master named them.
    @ivar deletions: the files scheduled for deletion.
    @ivar refused: (repr of the path, reason) of the records the path policy
        refused; their content was skipped.
    @ivar bytesIn: compressed bytes received.
    @ivar bytesOut: decompressed bytes.
    """

    files: tuple[str, ...]
    deletions: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    bytesIn: int
    bytesOut: int


def _reason(error: OSError) -> str:
    """The operating system's words for C{error}, as the middle of a sentence."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What changes when a file is written, replaced or touched."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@frozen
class _Snapshot:
    """A stable copy of one file, ready to go into the stream."""

    #: The content itself for a small file, else a spool holding it.
    spool: bytes | BinaryIO
    size: int
    mtime: float
    md5: bytes


class BundleWriter:
    """
    Produces the compressed chunks of a bundle, reading files in blocks so
    that memory stays bounded whatever their size.  Blocking I/O: the caller
    pulls the chunks from a thread.

    @ivar sent: the files actually sent.
    @ivar skipped: the files that vanished, or changed while being read: not
        sent, to be sent by the next round.
    @ivar failed: (path, reason) of the files that could not be sent at all
        (unreadable, not a regular file, a pseudo-file whose content is not
        its size, a path too long or not UTF-8, no room to spool): the
        caller should log them.
    @ivar bytesIn: bytes read from the files.
    @ivar bytesOut: compressed bytes produced.
    """

    def __init__(
        self,
        files: Iterable[tuple[str, str]],
        deletions: Iterable[str],
        chunkSize: int = 32 * 1024,
        level: int = 6,
        *,
        spoolMemory: int = 1 << 20,
        spoolFolder: str | None = None,
    ) -> None:
        """
        @param files: (relative path to announce, absolute path to read).
        @param deletions: relative paths the worker must delete.
        @param chunkSize: the largest chunk L{chunks} yields.
        @param level: the zlib compression level.
        @param spoolMemory: files up to this size are spooled in memory,
            larger ones in a temporary file in C{spoolFolder} (the system's
            temporary folder by default).
        """
        if chunkSize < 1:
            raise ValueError(f"chunkSize must be at least 1, not {chunkSize}")
        self._files = files
        self._deletions = deletions
        self._chunkSize = chunkSize
        self._compressor = zlib.compressobj(level)
        self._spoolMemory = spoolMemory
        self._spoolFolder = spoolFolder
        self._out = bytearray()
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._started = False
        self.sent: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.bytesIn = 0
        self.bytesOut = 0

    def chunks(self) -> Iterator[bytes]:
        """
        Yield the compressed bundle in chunks of at most C{chunkSize} bytes,
        never empty.  Can be iterated once.
        """
        if self._started:
            raise RuntimeError("BundleWriter.chunks() can be iterated only once")
        self._started = True
        fileCount = 0
        for relpath, abspath in self._files:
            path = self._encodePath(relpath)
            if path is None:
                continue
            snapshot = self._snapshot(relpath, abspath)
            if snapshot is None:
                continue
            header = _FILE + _PATH_LENGTH.pack(len(path)) + path + _SIZE_MTIME.pack(snapshot.size, snapshot.mtime)
            if isinstance(snapshot.spool, bytes):
                yield from self._emit(header + snapshot.spool + snapshot.md5)
            else:
                with snapshot.spool:
                    yield from self._emit(header)
                    snapshot.spool.seek(0)
                    while block := snapshot.spool.read(_READ_BLOCK):
                        yield from self._emit(block)
                    yield from self._emit(snapshot.md5)
            self.sent.append(relpath)
            fileCount += 1
        deletionCount = 0
        for relpath in self._deletions:
            path = self._encodePath(relpath)
            if path is None:
                continue
            yield from self._emit(_DELETE + _PATH_LENGTH.pack(len(path)) + path)
            deletionCount += 1
        yield from self._emit(_END + _COUNTS.pack(fileCount, deletionCount))
        self._compressPending()
        self._out += self._compressor.flush()
        yield from self._drain(everything=True)

    def _emit(self, raw: bytes) -> Iterator[bytes]:
        # Small records are compressed a batch at a time: one call to zlib
        # for hundreds of one-line files.
        self._pending.append(raw)
        self._pendingSize += len(raw)
        if self._pendingSize >= _COMPRESS_BATCH:
            self._compressPending()
        return self._drain(everything=False)

    def _compressPending(self) -> None:
        if self._pending:
            self._out += self._compressor.compress(b"".join(self._pending))
            self._pending.clear()
            self._pendingSize = 0

    def _drain(self, everything: bool) -> Iterator[bytes]:
        size = self._chunkSize
        while len(self._out) >= size or (everything and self._out):
            chunk = bytes(self._out[:size])
            del self._out[:size]
            self.bytesOut += len(chunk)
            yield chunk

    def _encodePath(self, relpath: str) -> bytes | None:
        try:
            path = relpath.encode("utf-8")
        except UnicodeEncodeError:
            self.failed.append((relpath, "its name is not valid UTF-8"))
            return None
        if not path or len(path) > 0xFFFF:
            self.failed.append((relpath, f"its name is {len(path)} bytes long (1 to 65535 can be sent)"))
            return None
        return path

    def _snapshot(self, relpath: str, abspath: str) -> _Snapshot | None:
        """
        Copy C{abspath} to a spool if it stays the same while read; record
        it as skipped or failed otherwise.
        """
        try:
            # Without waiting for a writer if it is a named pipe (refused below).
            fd = os.open(abspath, _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            self.skipped.append(relpath)
            return None
        except OSError as e:
            self.failed.append((relpath, f"{_reason(e)} while opening {abspath}"))
            return None
        try:
            before = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            self.failed.append((relpath, f"{_reason(e)} while reading {abspath}"))
            return None
        if not stat.S_ISREG(before.st_mode):
            os.close(fd)
            self.failed.append((relpath, f"{abspath} is not a regular file"))
            return None
        if before.st_size < _SMALL_FILE:
            try:
                return self._smallSnapshot(relpath, abspath, fd, before)
            finally:
                os.close(fd)
        with open(fd, "rb", buffering=0) as source:
            size = before.st_size
            # Most synchronised files are small (a group assignment is one
            # line): read whole into memory; a spool that can go to disk
            # for the others.
            spool: BinaryIO = tempfile.SpooledTemporaryFile(  # type: ignore[assignment]
                max_size=self._spoolMemory, dir=self._spoolFolder
            )
            md5 = hashlib.md5(usedforsecurity=False)
            count = 0
            try:
                # Read one byte past the size announced, to see a file that grew.
                while count <= size:
                    try:
                        block = source.read(min(_READ_BLOCK, size + 1 - count))
                    except OSError as e:
                        self.failed.append((relpath, f"{_reason(e)} while reading {abspath}"))
                        spool.close()
                        return None
                    if not block:
                        break
                    count += len(block)
                    md5.update(block)
                    try:
                        spool.write(block)
                    except OSError as e:
                        spoolFolder = self._spoolFolder or tempfile.gettempdir()
                        self.failed.append((relpath, f"{_reason(e)} while spooling it in {spoolFolder}"))
                        spool.close()
                        return None
                self.bytesIn += count
                after = os.fstat(source.fileno())
                try:
                    now: os.stat_result | None = os.stat(abspath)
                except OSError:
                    now = None
            except BaseException:
                spool.close()
                raise
        if now is None or not (_identity(before) == _identity(after) == _identity(now)):
            spool.close()
            self.skipped.append(relpath)
            return None
        if count != size:
            # Stable, yet not the size it says: a pseudo-file (/proc, /sys).
            spool.close()
            self.failed.append((relpath, f"{abspath} does not hold the {size} bytes its size says"))
            return None
        # int / int is correctly rounded: the float nearest the real time.
        return _Snapshot(spool, size, before.st_mtime_ns / 1_000_000_000, md5.digest())


    def _smallSnapshot(self, relpath: str, abspath: str, fd: int, before: os.stat_result) -> _Snapshot | None:
        """L{_snapshot} of a file under L{_SMALL_FILE}: one read of it all."""
        size = before.st_size
        try:
            # One byte past the size announced, to see a file that grew; a
            # short read of a regular file is its end.
            data = os.read(fd, size + 1)
        except OSError as e:
            self.failed.append((relpath, f"{_reason(e)} while reading {abspath}"))
            return None
        count = len(data)
        self.bytesIn += count
        after = os.fstat(fd)
        try:
            now = os.stat(abspath)
        except OSError:
            self.skipped.append(relpath)
            return None
        if not (_identity(before) == _identity(after) == _identity(now)):
            self.skipped.append(relpath)
            return None
        if count != size:
            self.failed.append((relpath, f"{abspath} does not hold the {size} bytes its size says"))
            return None
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        return _Snapshot(data, size, before.st_mtime_ns / 1_000_000_000, md5)


#: Files under this size are read into memory at once.
_SMALL_FILE = 64 * 1024
#: Raw bytes of records gathered before they are given to zlib.
_COMPRESS_BATCH = 64 * 1024


#: How the writer opens a file: without waiting for a writer if it is a
#: named pipe (it is refused after).
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class _State(enum.Enum):
    """Where the reader is in the stream of records."""

    TYPE = "the type of a record"
    PATH_LENGTH = "the length of a path"
    PATH = "a path"
    SIZE_MTIME = "the size and time of a file"
    CONTENT = "the content of a file"
    DIGEST = "the checksum of a file"
    COUNTS = "the end record"
    DONE = "nothing"


class BundleReader:
    """
    Decodes a bundle fed in compressed chunks, within L{Limits} against
    compression bombs, and stages each file through a L{Stager}.

    On any error the reader aborts the stager itself (so no temporary file
    is left behind, whatever the caller does) and refuses to go on.  After
    L{finish} returns, the caller commits the stager.

    @ivar bytesIn: compressed bytes fed so far.
    @ivar bytesOut: decompressed bytes so far.
    """

    def __init__(self, stager: Stager, limits: Limits = Limits()) -> None:
        self._stager = stager
        self._limits = limits
        #: Whether the stager takes small files whole (a L{Stager} does; a
        #: stand-in with only begin, write and end gets every file that way).
        self._wholeFiles = hasattr(stager, "stageWhole")
        self._decompressor = zlib.decompressobj()
        self._state = _State.TYPE
        self._want = 1
        self._partial = bytearray()
        self._kind = b""
        self._path = ""
        self._size = 0
        self._remaining = 0
        self._accepted = False
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._fileRecords = 0
        self._deletionRecords = 0
        self._broken: str | None = None
        self._finished = False
        self.bytesIn = 0
        self.bytesOut = 0

    def feed(self, compressed: bytes) -> None:
        """
        Decode the next chunk of the bundle, staging what it completes.

        @raise BundleError: the bundle is malformed, over a limit, or damaged.
        @raise wazuhcluster.sync.stager.StagingError: this node could not
            stage a file (disk full...).
        """
        self._checkUsable()
        try:
            self._decompress(memoryview(compressed))
        except BaseException as e:
            self._fail(str(e))
            raise

    def finish(self) -> BundleResult:
        """
        Check that the whole bundle arrived, and say what is staged.

        @raise BundleError: the bundle was cut short.
        """
        self._checkUsable()
        if self._state is not _State.DONE:
            if self._state is _State.CONTENT:
                arrived = self._size - self._remaining
                where = f"in the middle of {showPath(self._path)} ({arrived} of {self._size} bytes arrived)"
            elif self._state is _State.TYPE:
                where = "before its end record"
            else:
                where = f"in {self._state.value}"
            error = _rejected(f"the bundle was cut short {where}")
        elif not self._decompressor.eof:
            error = _rejected("the compressed bundle was cut short after its end record")
        else:
            self._finished = True
            return BundleResult(
                files=self._stager.staged,
                deletions=self._stager.deleting,
                refused=tuple(self._stager.refused),
                bytesIn=self.bytesIn,
                bytesOut=self.bytesOut,
            )
        self._fail(str(error))
        raise error

    def _checkUsable(self) -> None:
        if self._finished:
            raise RuntimeError("BundleReader used after finish()")
        if self._broken is not None:
            raise BundleError(f"this bundle was already refused: {self._broken}")

    def _fail(self, why: str) -> None:
        self._broken = why
        self._stager.abort()

    def _decompress(self, data: memoryview) -> None:
        self.bytesIn += len(data)
        decompressor = self._decompressor
        for start in range(0, len(data), _INPUT_SLICE):
            piece: bytes | memoryview = data[start : start + _INPUT_SLICE]
            while True:
                if decompressor.eof:
                    if piece:
                        raise _rejected("data follows the end of the compressed bundle")
                    break
                try:
                    out = decompressor.decompress(piece, _DECOMPRESS_STEP)
                except zlib.error as e:
                    raise _rejected(f"the bundle is not a valid compressed stream ({e})") from e
                piece = decompressor.unconsumed_tail
                if out:
                    self.bytesOut += len(out)
                    if self.bytesOut > self._limits.maxTotalBytes:
                        limit = self._limits.maxTotalBytes
                        raise _rejected(f"the bundle decompresses to more than {limit} bytes, the limit")
                    self._consume(memoryview(out))
                if decompressor.unused_data:
                    raise _rejected("data follows the end of the compressed bundle")
                if not piece and len(out) < _DECOMPRESS_STEP:
                    break

    def _consume(self, data: memoryview) -> None:
        """Parse decompressed bytes, passing file contents straight to the stager."""
        position = 0
        end = len(data)
        while position < end:
            if self._state is _State.TYPE and not self._partial and self._wholeFiles:
                # The records that lie whole in this block, in one go; the
                # field by field path below takes the one cut by its end.
                position = self._wholeRecords(data, position)
                if position >= end:
                    break
            if self._state is _State.CONTENT:
                take = min(self._remaining, end - position)
                piece = data[position : position + take]
                if self._accepted:
                    self._stager.write(piece)
                else:
                    self._md5.update(piece)
                position += take
                self._remaining -= take
                if not self._remaining:
                    self._expect(_State.DIGEST, _MD5_SIZE)
                continue
            if self._state is _State.DONE:
                raise _rejected("data follows the end record of the bundle")
            take = min(self._want - len(self._partial), end - position)
            self._partial += data[position : position + take]
            position += take
            if len(self._partial) == self._want:
                field = bytes(self._partial)
                self._partial.clear()
                self._onField(field)

    def _wholeRecords(self, data: memoryview, position: int) -> int:
        """
        Check and stage the file records (up to L{_WHOLE_FILE} bytes of
        content) and delete records that lie whole in C{data} from
        C{position}, with the same checks as the field by field path; return
        where the first record not taken starts.
        """
        end = len(data)
        limits = self._limits
        maxRecords = limits.maxRecords
        maxPath = limits.maxPathBytes
        whole: list[tuple[str, float, memoryview]] = []
        unpackLength = _PATH_LENGTH.unpack_from
        unpackSizeMtime = _SIZE_MTIME.unpack_from
        md5 = hashlib.md5
        while end - position >= 3:
            kind = data[position]
            if kind != _FILE_BYTE and kind != _DELETE_BYTE:
                break
            (length,) = unpackLength(data, position + 1)
            if not length or length > maxPath:
                break
            pathEnd = position + 3 + length
            if kind == _DELETE_BYTE:
                if pathEnd > end or self._fileRecords + self._deletionRecords >= maxRecords:
                    break
                path = _decodePath(bytes(data[position + 3 : pathEnd]))
                self._stageWhole(whole)
                self._deletionRecords += 1
                self._stager.delete(path)
                position = pathEnd
                continue
            contentStart = pathEnd + _SIZE_MTIME.size
            if contentStart > end:
                break
            size, mtime = unpackSizeMtime(data, pathEnd)
            recordEnd = contentStart + size + _MD5_SIZE
            if size > _WHOLE_FILE or recordEnd > end:
                break
            if self._fileRecords + self._deletionRecords >= maxRecords:
                break
            path = _decodePath(bytes(data[position + 3 : pathEnd]))
            self._checkFile(path, size, mtime)
            content = data[contentStart : contentStart + size]
            if md5(content, usedforsecurity=False).digest() != data[recordEnd - _MD5_SIZE : recordEnd]:
                raise _rejected(f"the content of {showPath(path)} does not match its MD5 checksum")
            self._fileRecords += 1
            whole.append((path, mtime, content))
            position = recordEnd
        self._stageWhole(whole)
        return position

    def _stageWhole(self, whole: list[tuple[str, float, memoryview]]) -> None:
        if whole:
            self._stager.stageWhole(whole)
            whole.clear()

    def _expect(self, state: _State, want: int) -> None:
        self._state = state
        self._want = want

    def _onField(self, field: bytes) -> None:
        """Act on one complete header field, and say what comes next."""
        state = self._state
        limits = self._limits
        if state is _State.TYPE:
            self._kind = field
            if field in (_FILE, _DELETE):
                if self._fileRecords + self._deletionRecords >= limits.maxRecords:
                    raise _rejected(f"the bundle has more than {limits.maxRecords} records, the limit")
                self._expect(_State.PATH_LENGTH, _PATH_LENGTH.size)
            elif field == _END:
                self._expect(_State.COUNTS, _COUNTS.size)
            else:
                raise _rejected(f"the bundle has a record of unknown type {field!r}")
        elif state is _State.PATH_LENGTH:
            (length,) = _PATH_LENGTH.unpack(field)
            if not length:
                raise _rejected("the bundle has a record with an empty path")
            if length > limits.maxPathBytes:
                raise _rejected(
                    f"the bundle has a path of {length} bytes, over the limit of {limits.maxPathBytes}"
                )
            self._expect(_State.PATH, length)
        elif state is _State.PATH:
            self._path = _decodePath(field)
            if self._kind == _FILE:
                self._expect(_State.SIZE_MTIME, _SIZE_MTIME.size)
            else:
                self._deletionRecords += 1
                self._stager.delete(self._path)
                self._expect(_State.TYPE, 1)
        elif state is _State.SIZE_MTIME:
            self._beginFile(*_SIZE_MTIME.unpack(field))
        elif state is _State.DIGEST:
            self._endFile(field)
        elif state is _State.COUNTS:
            files, deletions = _COUNTS.unpack(field)
            if (files, deletions) != (self._fileRecords, self._deletionRecords):
                raise _rejected(
                    f"the bundle's end record counts {files} files and {deletions} deletions"
                    f" but it holds {self._fileRecords} and {self._deletionRecords}"
                )
            self._expect(_State.DONE, 0)
        else:  # pragma: no cover - CONTENT and DONE never reach here
            raise AssertionError(state)

    def _beginFile(self, size: int, mtime: float) -> None:
        path = self._path
        self._checkFile(path, size, mtime)
        self._fileRecords += 1
        self._size = self._remaining = size
        self._accepted = self._stager.begin(path, size, mtime)
        if not self._accepted:
            self._md5 = hashlib.md5(usedforsecurity=False)
        if size:
            self._expect(_State.CONTENT, 0)
        else:
            self._expect(_State.DIGEST, _MD5_SIZE)

    def _checkFile(self, path: str, size: int, mtime: float) -> None:
        """Refuse a file record whose size or time is over a limit or impossible."""
        limits = self._limits
        if size > limits.maxFileSize:
            raise _rejected(
                f"the bundle declares {showPath(path)} with {size} bytes,"
                f" over the limit of {limits.maxFileSize}"
            )
        if self.bytesOut + size > limits.maxTotalBytes:
            raise _rejected(
                f"the bundle declares {showPath(path)} with {size} bytes, which would take it over"
                f" the limit of {limits.maxTotalBytes} decompressed bytes"
            )
        if not (math.isfinite(mtime) and -_MTIME_LIMIT < mtime < _MTIME_LIMIT):
            raise _rejected(
                f"the bundle declares {showPath(path)} with an impossible modification time ({mtime!r})"
            )

    def _endFile(self, digest: bytes) -> None:
        mismatch = f"the content of {showPath(self._path)} does not match its MD5 checksum"
        if self._accepted:
            try:
                self._stager.end(digest)
            except ChecksumMismatch as e:
                raise _rejected(mismatch) from e
        elif self._md5.digest() != digest:
            raise _rejected(mismatch)
        self._expect(_State.TYPE, 1)


def _decodePath(raw: bytes) -> str:
    """The path of a record, or L{BundleError} if it is not clean UTF-8 text."""
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _rejected(f"the bundle has a path that is not UTF-8 ({raw[:200]!r})") from None
    if "\0" in path:
        raise _rejected(f"the bundle has a path with a NUL character ({path[:200]!r})")
    return path


def _rejected(what: str) -> BundleError:
    """A L{BundleError} whose sentence also says what became of the transfer."""
    return BundleError(f"{what}: the bundle was refused and the previous files kept")
