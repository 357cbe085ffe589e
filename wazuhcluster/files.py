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


def writeFileAtomically(
    path: str, data: bytes, mode: int = 0o640, durable: bool = True, mtimeNs: int | None = None
) -> None:
    """
    Replace C{path} with C{data}, all or nothing.  C{durable=False} skips
    the flush to disk, for state that is rewritten every few seconds (agent
    statuses): a crash may then lose the new content, never the old file.
    C{mtimeNs} sets the file's modification time (in nanoseconds) before it
    appears.
    """
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(
        dir=folder, prefix="." + os.path.basename(path) + ".", suffix=TEMPORARY_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(temporary, mode)
        _keepOwner(path, temporary)
        if mtimeNs is not None:
            os.utime(temporary, ns=(mtimeNs, mtimeNs))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _keepOwner(path: str, temporary: str) -> None:
    """
    Give the new file the owner and group of the one it replaces: a tool run
    as root (manage_agents) must not leave root's files where the daemon,
    running as another user, has to read them.
    """
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    os.chown(temporary, st.st_uid, st.st_gid)
