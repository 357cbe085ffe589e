"""
The master's recent generations, and which files each change touched.

Each time the master's files change (a new generation), the log keeps the
digest of the files as they were and, for every path the change added,
removed or rewrote, the entry it had before.  A worker whose check carries
the digest of one of those recent generations holds exactly those files, so
the master knows what differs without asking the worker for any list: the
paths changed since, with the worker's entries as they were then.  This is
the "updates since the sequence the peer acknowledged" of Syncthing's index
exchange, keyed by digest rather than by a number the worker reports, so a
worker can never claim a generation it does not hold.

The log is bounded: L{ChangeLog.maxGenerations} changes and
L{ChangeLog.maxPaths} remembered paths in all; a change bigger than that
empties it.  A worker it cannot place lists the buckets that differ instead
(see L{wazuhcluster.master.integrity}).
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from attrs import frozen

from .digest import TreeDigest
from .manifest import FileEntry
from .scan import ScanResult

__all__ = ["ChangeLog"]

#: Changes remembered (at Wazuh's 8 s period, two minutes of one edit per scan).
MAX_GENERATIONS = 16

#: Paths remembered over all those changes.
MAX_PATHS = 10_000


@frozen
class _Change:
    """One change: the digest of the files before it, and their entries of the paths it touched."""

    before: TreeDigest
    entries: dict[str, FileEntry | None]


class ChangeLog:
    """The last few changes of the master's files, newest last."""

    def __init__(self, maxGenerations: int = MAX_GENERATIONS, maxPaths: int = MAX_PATHS) -> None:
        self.maxGenerations = maxGenerations
        self.maxPaths = maxPaths
        self._changes: deque[_Change] = deque()
        self._paths = 0

    def __len__(self) -> int:
        return len(self._changes)

    def record(self, before: ScanResult, changed: Iterable[str]) -> None:
        """
        The files of C{before} were replaced by others that differ at
        C{changed}: remember C{before}'s digest and its entries there.
        """
        entries: dict[str, FileEntry | None] = {}
        for relpath in changed:
            entries[relpath] = before.files.get(relpath)  # type: ignore[assignment]
            if len(entries) > self.maxPaths:
                self.clear()
                return
        self._changes.append(_Change(before.digest, entries))
        self._paths += len(entries)
        while len(self._changes) > self.maxGenerations or self._paths > self.maxPaths:
            self._paths -= len(self._changes.popleft().entries)

    def clear(self) -> None:
        """Forget every change (the master's files were replaced wholesale)."""
        self._changes.clear()
        self._paths = 0

    def since(self, digest: TreeDigest) -> dict[str, FileEntry | None] | None:
        """
        For files whose digest is C{digest}: each path changed since, with
        its entry in those files (L{None}: they did not hold it).  L{None}
        when C{digest} is not that of a remembered generation.
        """
        changes = list(self._changes)
        for start in range(len(changes) - 1, -1, -1):
            if changes[start].before == digest:
                held: dict[str, FileEntry | None] = {}
                for change in changes[start:]:
                    for relpath, entry in change.entries.items():
                        held.setdefault(relpath, entry)
                return held
        return None
