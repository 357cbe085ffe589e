"""
Manifests: the list of synchronised files a node has, with each file's MD5,
modification time and size, as it crosses a cluster link.

A worker sends its manifest to the master, which compares it with its own to
decide what to send and what to delete.  On the wire a manifest is JSON
lines, one file per line and sorted by path, cut into pieces of about 32 KiB
that a stream can compress and send one at a time, so that neither side ever
holds more than one piece of text.  The receiving side decodes pieces as they
arrive and refuses a manifest that breaks any limit, because it comes from
another machine.  Paths are not checked here: the comparer checks them
against the synchronisation table.
"""

from __future__ import annotations

import json
import math
import re
from json.encoder import encode_basestring_ascii
from typing import Iterator, Mapping

from attrs import frozen

__all__ = [
    "PIECE_SIZE",
    "FileEntry",
    "Manifest",
    "ManifestDecoder",
    "ManifestError",
    "encodeManifest",
]

#: Bytes of JSON lines in one piece yielded by L{encodeManifest}; only a
#: single line longer than this makes a bigger piece.
PIECE_SIZE = 32 * 1024

#: The largest file size a manifest may state: what a signed 64-bit offset holds.
MAX_SIZE = 2**63 - 1

_MD5 = re.compile(r"[0-9a-f]{32}")
_SHOWN_CHARACTERS = 100
_KEYS = frozenset({"p", "m", "t", "s"})


@frozen
class FileEntry:
    """
    What a node knows of one synchronised file: its MD5 (32 lowercase hex
    digits), its modification time in seconds since the epoch, and its size
    in bytes.  Two nodes have the same file when the MD5s are equal; the
    modification time is kept so the writer can give the copy the master's.
    """

    md5: str
    mtime: float
    size: int


#: A node's synchronised files: relative path -> entry.
Manifest = Mapping[str, FileEntry]


def _show(value: object) -> str:
    """The repr of C{value} for a message, shortened if it is very long."""
    shown = repr(value)
    if len(shown) > _SHOWN_CHARACTERS:
        shown = shown[:_SHOWN_CHARACTERS] + f"... ({len(shown)} characters)"
    return shown


class ManifestError(ValueError):
    """
    A manifest from a peer that cannot be used; C{str()} is one sentence
    naming the line and what is wrong with it.
    """


def encodeManifest(files: Manifest) -> Iterator[bytes]:
    """
    The JSON-lines text of C{files}, one object C{{"p": path, "m": md5, "t":
    mtime, "s": size}} per line, sorted by path, yielded in pieces of at most
    L{PIECE_SIZE} bytes (several lines each; a piece is bigger only when it
    holds one line that is), ready to be compressed and streamed.  Nothing is
    yielded for an empty manifest.
    """
    pending: list[str] = []
    pendingSize = 0
    for path in sorted(files):
        entry = files[path]
        mtime = float(entry.mtime)
        if not math.isfinite(mtime):
            raise ManifestError(f"the modification time of {_show(path)} is {mtime!r}, not a finite number")
        line = (
            f'{{"p":{encode_basestring_ascii(path)},"m":{encode_basestring_ascii(entry.md5)},'
            f'"t":{mtime!r},"s":{int(entry.size)}}}\n'
        )
        if pending and pendingSize + len(line) > PIECE_SIZE:
            yield "".join(pending).encode("ascii")
            pending = []
            pendingSize = 0
        pending.append(line)
        pendingSize += len(line)
    if pending:
        yield "".join(pending).encode("ascii")


class ManifestDecoder:
    """
    Incremental decoder with limits, for a manifest arriving from a peer.

    Feed it the bytes as they come, cut anywhere, then call L{finish}.  It
    keeps at most one partial line of at most C{maxLine} bytes besides the
    entries, refuses more than C{maxEntries} of them, and once it has raised
    L{ManifestError} it refuses everything after, since the manifest is
    unusable as a whole.
    """

    def __init__(self, maxEntries: int = 1_000_000, maxLine: int = 8192) -> None:
        self._maxEntries = maxEntries
        self._maxLine = maxLine
        self._partial = b""
        self._lineNumber = 0
        self._entries: dict[str, FileEntry] = {}
        self._error: ManifestError | None = None
        self._finished = False

    def feed(self, data: bytes) -> None:
        """
        Decode the complete lines in C{data} (and in what was fed before);
        raise L{ManifestError} on a line over C{maxLine} bytes, invalid JSON,
        wrong keys or types, an MD5 that is not 32 lowercase hex digits, a
        negative size, a modification time that is not a finite number, a
        path seen twice, or more than C{maxEntries} files.
        """
        self._checkUsable()
        try:
            self._feed(data)
        except ManifestError as e:
            self._error = e
            raise

    def finish(self) -> dict[str, FileEntry]:
        """
        Every entry decoded, once the whole manifest was fed; raise
        L{ManifestError} if it ends in the middle of a line (it was cut short).
        """
        self._checkUsable()
        self._finished = True
        if self._partial:
            self._error = ManifestError(
                f"the manifest ends in the middle of line {self._lineNumber + 1} "
                f"({len(self._partial)} bytes after the last newline): it was cut short"
            )
            raise self._error
        return self._entries

    def _checkUsable(self) -> None:
        """Raise if an earlier error or L{finish} ended this decoder."""
        if self._error is not None:
            raise ManifestError(f"the manifest was already refused: {self._error}")
        if self._finished:
            raise ManifestError("the manifest was already finished; nothing more can be fed")

    def _feed(self, data: bytes) -> None:
        """Split C{data} into lines, keeping the last partial line for later."""
        lines = bytes(data).split(b"\n")
        if len(lines) == 1:
            if len(self._partial) + len(data) > self._maxLine:
                self._tooLong(len(self._partial) + len(data))
            self._partial += lines[0]
            return
        lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        for line in lines:
            self._decodeLine(line)
        if len(self._partial) > self._maxLine:
            self._tooLong(len(self._partial))

    def _tooLong(self, length: int) -> None:
        """Refuse the current line, already C{length} bytes long."""
        raise ManifestError(
            f"line {self._lineNumber + 1} of the manifest is longer than the "
            f"{self._maxLine} bytes allowed ({length} bytes so far)"
        )

    def _decodeLine(self, line: bytes) -> None:
        """Check one complete line and add its entry."""
        if len(line) > self._maxLine:
            self._tooLong(len(line))
        self._lineNumber += 1
        number = self._lineNumber
        try:
            item = json.loads(line.decode("utf-8"))
        except RecursionError:
            raise ManifestError(f"line {number} of the manifest is nested too deeply") from None
        except ValueError as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise ManifestError(f"line {number} of the manifest is not valid JSON ({reason})") from None
        if type(item) is not dict or item.keys() != _KEYS:
            raise ManifestError(
                f"line {number} of the manifest is not an object with exactly the keys p, m, t and s"
            )
        path, md5, mtime, size = item["p"], item["m"], item["t"], item["s"]
        if type(path) is not str:
            raise ManifestError(f"line {number} of the manifest has a path (p) that is not a string")
        if type(md5) is not str or not _MD5.fullmatch(md5):
            raise ManifestError(
                f"line {number} of the manifest has an MD5 (m) that is not 32 lowercase hexadecimal digits: {_show(md5)}"
            )
        if type(mtime) not in (int, float):
            raise ManifestError(f"line {number} of the manifest has a modification time (t) that is not a number")
        try:
            mtime = float(mtime)
        except OverflowError:
            mtime = math.inf
        if not math.isfinite(mtime):
            raise ManifestError(
                f"line {number} of the manifest has a modification time (t) that is not a finite number"
            )
        if type(size) is not int or not 0 <= size <= MAX_SIZE:
            raise ManifestError(
                f"line {number} of the manifest has a size (s) that is not a whole number from 0 to {MAX_SIZE}"
            )
        if path in self._entries:
            raise ManifestError(f"line {number} of the manifest repeats the path {_show(path)}")
        if len(self._entries) >= self._maxEntries:
            raise ManifestError(f"the manifest lists more than the {self._maxEntries} files allowed")
        self._entries[path] = FileEntry(md5, mtime, size)
