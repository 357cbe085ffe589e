"""
What a worker must change to hold the master's synchronised files.

The master compares its own manifest with the one a worker sent and gets
four lists: files to create, files to overwrite, files to delete, and files
only the worker has in a folder where the worker is the authority (agent
group assignments), which the master asks for.  It is a pure function of the
two manifests and the table so that every rule of the synchronisation can be
tested without a cluster.  Paths from the worker are checked against the
table first: a path that fails is reported, never deleted.
"""

from __future__ import annotations

from attrs import frozen

from .manifest import Manifest
from .table import SyncTable, UnsafePath

__all__ = ["Comparison", "compare"]


@frozen
class Comparison:
    """
    The differences between the master's files and one worker's, each list
    sorted by path.

    C{missing}: on the master only, the worker must create them.  C{shared}:
    on both with different MD5s, the worker must overwrite them.  C{extra}:
    on the worker only, in a rule without C{extra_valid}, the worker must
    delete them.  C{extra_valid}: on the worker only, under an
    C{extra_valid} rule, the master asks for them.  C{refused}: worker paths
    that fail L{SyncTable.validate}, ignored apart from being logged.
    """

    missing: tuple[str, ...]
    shared: tuple[str, ...]
    extra: tuple[str, ...]
    extra_valid: tuple[str, ...]
    refused: tuple[str, ...]

    @property
    def inSync(self) -> bool:
        """Whether the worker has nothing to create, overwrite, delete or send."""
        return not (self.missing or self.shared or self.extra or self.extra_valid)


def compare(
    master: Manifest,
    worker: Manifest,
    table: SyncTable,
    unstable: frozenset[str] = frozenset(),
) -> Comparison:
    """
    Compare C{master}, the master's own scan, with C{worker}, the manifest a
    worker sent.

    C{unstable} is the master scan's L{ScanResult.unstable
    <wazuhcluster.sync.scan.ScanResult.unstable>}: files whose content is not
    known this round, and folders (ending with ``/``) that could not be
    listed.  Nothing in them is sent, and the worker's copies are not deleted
    or asked for, until a later round knows them.  Master paths are trusted
    (they come from this node's own scan); every path only the worker has is
    validated before it can be deleted or asked for.
    """
    heldFolders = tuple(path for path in unstable if path.endswith("/"))
    missing: list[str] = []
    shared: list[str] = []
    # By path: a master entry is looked at only when the worker has the file
    # too (a scan's entries are made when asked for; a fresh worker has none).
    for path in master:
        if path in unstable or (heldFolders and path.startswith(heldFolders)):
            continue
        theirs = worker.get(path)
        if theirs is None:
            missing.append(path)
        elif theirs.md5 != master[path].md5:
            shared.append(path)
    extra: list[str] = []
    extraValid: list[str] = []
    refused: list[str] = []
    for path in worker:
        if path in master:
            continue
        try:
            rule = table.validate(path)
        except UnsafePath:
            refused.append(path)
            continue
        if path in unstable or (heldFolders and path.startswith(heldFolders)):
            continue
        (extraValid if rule.extra_valid else extra).append(path)
    return Comparison(
        missing=tuple(sorted(missing)),
        shared=tuple(sorted(shared)),
        extra=tuple(sorted(extra)),
        extra_valid=tuple(sorted(extraValid)),
        # A manifest's keys are text, but a refused one may be anything.
        refused=tuple(sorted(refused, key=lambda p: (not isinstance(p, str), str(p)))),
    )
