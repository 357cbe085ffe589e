"""
Writing files so that a reader never sees half of one.

Every file the daemon writes goes to a temporary name in the same folder, is
flushed to disk, given its mode, and only then renamed over the old one.  A
crash or a full disk leaves the old file as it was.
"""

from __future__ import annotations

import os
import tempfile

#: Suffix of the temporary files; never synchronised, removed at start.
TEMPORARY_SUFFIX = ".tmp"


def writeFileAtomically(path: str, data: bytes, mode: int = 0o640) -> None:
    """Replace C{path} with C{data}, all or nothing."""
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(
        dir=folder, prefix="." + os.path.basename(path) + ".", suffix=TEMPORARY_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
