"""
Applying the files a master sends, all at once or not at all.

A worker receives the files it lacks as one long stream.  Each file goes to a
temporary file beside its target while it arrives (same folder, so that the
final rename is atomic and needs no space), is flushed to disk and given its
mode and modification time.  Only when the whole stream has arrived and
checked out does L{Stager.commit} rename them all into place, delete the
files the master no longer has and remove the folders those deletions
emptied.  Until then no file the worker's manager reads has changed, so a
transfer cut halfway (link lost, master killed, disk full) costs nothing but
the temporaries, which L{Stager.abort} removes at once and
L{removeStaleTemporaries} removes at the next start if the process itself
was killed.

Which paths may be written, with which mode, is not decided here: the
caller injects a L{Resolve} function (the synchronisation table's policy),
and a path it refuses is skipped and reported, never written.

This module does blocking I/O and knows nothing of Twisted: the network
layer calls it from a thread.  A L{Stager}'s calls are serialised by a lock,
so that giving a transfer up from one thread is safe while another thread
is still writing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar, Union

from attrs import define, frozen

__all__ = [
    "FOLDER_MODE",
    "TEMPORARY_PREFIX",
    "TEMPORARY_SUFFIX",
    "ApplyResult",
    "ChecksumMismatch",
    "Resolve",
    "Stager",
    "StagingError",
    "WriteBytes",
    "removeStaleTemporaries",
    "showPath",
]

# Start of the name of every temporary file a Stager writes: the table's,
# so that the scanner and the table ignore exactly these names.
from .table import TEMPORARY_PREFIX  # noqa: E402

#: End of the name of every temporary file a L{Stager} writes.
TEMPORARY_SUFFIX = ".tmp"

#: Mode of the folders created for incoming files (as Wazuh's own folders).
FOLDER_MODE = 0o770

_RANDOM_BYTES = 8
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_TEMPORARY_NAME = re.compile(
    re.escape(TEMPORARY_PREFIX) + "[0-9a-f]{%d}" % (2 * _RANDOM_BYTES) + re.escape(TEMPORARY_SUFFIX)
)

#: The path policy: C{resolve(relpath)} returns the absolute target path, the
#: file mode (such as C{0o660}) and the prune root (the folder under which
#: folders emptied by deletions are removed, the root itself excepted), or
#: C{None} for no pruning.  It raises the "unsafe" exception given to the
#: L{Stager} for a path that must not be written.
Resolve = Callable[[str], tuple[str, int, Union[str, None]]]

#: Writes some bytes to a file descriptor and returns how many were written:
#: L{os.write}, or a substitute in tests (a full disk, say).
WriteBytes = Callable[[int, Union[bytes, memoryview]], int]


class StagingError(Exception):
    """
    An incoming file could not be staged or applied on this node (disk full,
    permission denied...).  C{str(err)} is one sentence for the log that names
    the file.  The caller should call L{Stager.abort}.
    """


class ChecksumMismatch(StagingError):
    """
    A staged file's content does not match the MD5 checksum the sender gave:
    the stream is corrupt, not the disk.  C{relpath} names the file.
    """

    def __init__(self, message: str, relpath: str) -> None:
        super().__init__(message)
        self.relpath = relpath


@frozen
class ApplyResult:
    """
    What L{Stager.commit} did.

    C{written} and C{deleted} are the relative paths as the master named
    them; C{pruned} are the absolute paths of the folders removed because
    deletions emptied them.  C{failed} lists (relative path, reason) for
    the files that could not be renamed into place or deleted (a folder in
    the way, permission denied): the others were applied regardless, and the
    caller should log these.
    """

    written: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()


@define
class _Staged:
    """A file written to its temporary, waiting for the commit."""

    relpath: str
    target: str
    temporary: str
    folder: str


@frozen
class _Deletion:
    """A file to delete at the commit, and where to stop pruning."""

    relpath: str
    target: str
    pruneRoot: str | None


class _Open:
    """The file being staged right now."""

    def __init__(
        self, relpath: str, target: str, temporary: str, fd: int, size: int, mtime: float, mode: int
    ) -> None:
        self.relpath = relpath
        self.target = target
        self.temporary = temporary
        self.fd = fd
        self.size = size
        self.mtime = mtime
        self.mode = mode
        self.written = 0
        self.md5 = hashlib.md5(usedforsecurity=False)


def showPath(relpath: str) -> str:
    """
    C{relpath} as it should appear in a log line: as is when printable,
    quoted with escapes otherwise (a path from the network may hold a line
    break meant to forge log lines).
    """
    return relpath if relpath.isprintable() else repr(relpath)


def _reason(error: OSError) -> str:
    """The operating system's words for C{error}, as the middle of a sentence."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


_Arguments = ParamSpec("_Arguments")
_Result = TypeVar("_Result")


def _locked(
    method: Callable[Concatenate[Stager, _Arguments], _Result],
) -> Callable[Concatenate[Stager, _Arguments], _Result]:
    """Run C{method} under the stager's lock."""

    @wraps(method)
    def locked(self: Stager, *args: _Arguments.args, **kwargs: _Arguments.kwargs) -> _Result:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Stager:
    """
    Writes incoming files to temporary files beside their targets, and
    commits them all at once.

    One L{Stager} serves one transfer: L{begin}, L{write}, L{end} for each
    file and L{delete} for each deletion, in the stream's order, then
    L{commit} if everything arrived or L{abort} otherwise.  When the same
    target is named twice the later record wins, as if the records had been
    applied one after the other.

    Calls are meant to come one at a time, in order; but they are serialised
    by a lock, so that an L{abort} from another thread (the link was lost)
    waits for a write in progress instead of closing its file under it, and
    the calls after it raise L{StagingError}.

    @ivar refused: (repr of the relative path, reason) of every path the
        policy refused or that could not take a file (a folder in the way).
    """

    def __init__(
        self,
        resolve: Resolve,
        unsafe: type[Exception] | tuple[type[Exception], ...],
        *,
        writeBytes: WriteBytes = os.write,
        contentProblem: Callable[[str, bytes], str | None] | None = None,
        targetsChecked: bool = False,
    ) -> None:
        """
        @param contentProblem: given a received file's path and content, why
            it must not be written (it is then refused, the others kept), or
            L{None}; without it any content goes.  It reads whole files: for
            small ones only.
        @param targetsChecked: C{resolve} itself refuses a target that exists
            and is not a regular file (the table's resolver does, with an
            C{lstat} of the target): the stager then does not look again.
        """
        self._resolve = resolve
        self._targetsChecked = targetsChecked
        #: Folders found or made during this transfer: not looked at again.
        self._folders: set[str] = set()
        #: Per file mode: whether a file created with it needs an fchmod
        #: (the umask takes bits away), learnt from the first such file.
        self._chmodNeeded: dict[int, bool] = {}
        self._temporaryStem = ""
        self._temporaryCount = 0
        self._contentProblem = contentProblem
        self._unsafe = unsafe
        self._writeBytes = writeBytes
        self._open: _Open | None = None
        self._staged: dict[str, _Staged] = {}
        self._deletions: dict[str, _Deletion] = {}
        self._createdFolders: list[str] = []
        self._finished = False
        self._aborted = False
        self._lock = threading.Lock()
        self.refused: list[tuple[str, str]] = []

    # Receiving

    @_locked
    def begin(self, relpath: str, size: int, mtime: float) -> bool:
        """
        Start receiving C{relpath} (C{size} bytes, modified at C{mtime}
        seconds since the epoch).  Return C{False}, and record why in
        L{refused}, if the file must not be written: the caller then skips
        its content and goes on with the next record.
        """
        self._checkIdle("begin")
        placed = self._place(relpath)
        if placed is None:
            return False
        target, folder, mode = placed
        temporary, fd = self._createTemporary(relpath, folder, 0o600)
        self._open = _Open(relpath, target, temporary, fd, size, mtime, mode)
        return True

    @_locked
    def stageWhole(self, files: Iterable[tuple[str, float, bytes | memoryview]]) -> None:
        """
        Stage files that arrived whole, checked against their MD5 by the
        caller: for each (relative path, modification time, content), as
        L{begin}, L{write} and L{end} would, in one call (the many small
        files of a transfer cost a call, not three, and one lock).  A path
        the policy refuses is recorded in L{refused} and skipped.

        @raise StagingError: a file could not be written.
        """
        self._checkIdle("stageWhole")
        contentProblem = self._contentProblem
        writeBytes = self._writeBytes
        for relpath, mtime, content in files:
            placed = self._place(relpath)
            if placed is None:
                continue
            target, folder, mode = placed
            if contentProblem is not None:
                problem = contentProblem(relpath, bytes(content))
                if problem is not None:
                    self.refused.append((repr(relpath), problem))
                    continue
            chmod = self._chmodNeeded.get(mode)
            temporary, fd = self._createTemporary(relpath, folder, mode)
            written = 0
            try:
                try:
                    if chmod is None:
                        chmod = self._chmodNeeded[mode] = stat.S_IMODE(os.fstat(fd).st_mode) != mode
                    view = memoryview(content)
                    while view:
                        count = writeBytes(fd, view)
                        written += count
                        view = view[count:]
                    if chmod:
                        os.fchmod(fd, mode)
                    nanoseconds = _nanoseconds(mtime)
                    os.utime(fd, ns=(nanoseconds, nanoseconds))
                finally:
                    os.close(fd)
            except OSError as e:
                _unlinkQuietly(temporary)
                doing = f"while writing {showPath(relpath)} ({written} bytes written)"
                raise self._error(e, doing, None) from e
            self._keep(_Staged(relpath, target, temporary, folder))

    def _place(self, relpath: str) -> tuple[str, str, int] | None:
        """
        The target, folder and mode of C{relpath}, its folders made; or
        L{None} (and C{relpath} refused) if it must not be written.
        """
        resolved = self._resolveOrRefuse(relpath)
        if resolved is None:
            return None
        target, mode, _ = resolved
        if "//" in target or "/." in target or not target.startswith("/") or target.endswith("/"):
            target = os.path.normpath(target)
        folder = target[: target.rfind("/")] or "/"
        if not self._targetsChecked:
            try:
                if stat.S_ISDIR(os.lstat(target).st_mode):
                    self.refused.append((repr(relpath), f"a folder is in the way at {showPath(target)}"))
                    return None
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                self.refused.append((repr(relpath), f"a file is in the way of the folder {showPath(folder)}"))
                return None
            except OSError as e:
                raise self._error(e, f"while checking {showPath(target)}", relpath) from e
        if folder not in self._folders:
            if not self._makeFolders(relpath, folder):
                return None
            self._folders.add(folder)
        return target, folder, mode

    def _keep(self, staged: _Staged) -> None:
        """Keep C{staged} for the commit: it replaces an earlier record of the same target."""
        previous = self._staged.pop(staged.target, None)
        if previous is not None:
            _unlinkQuietly(previous.temporary)
        self._deletions.pop(staged.target, None)
        self._staged[staged.target] = staged

    @_locked
    def write(self, data: bytes | memoryview) -> None:
        """Append C{data} to the file being received."""
        current = self._current("write")
        view = memoryview(data)
        current.md5.update(view)
        try:
            while view:
                count = self._writeBytes(current.fd, view)
                current.written += count
                view = view[count:]
        except OSError as e:
            raise self._writeError(e, current) from e

    @_locked
    def end(self, md5: bytes) -> None:
        """
        Finish the file being received: check its size and MD5 checksum
        against what the sender announced, give it its mode and modification
        time, flush it to disk, and keep it for the commit.

        @raise ChecksumMismatch: the content is not what the sender hashed.
        @raise StagingError: the file could not be written out.
        """
        current = self._current("end")
        self._open = None
        try:
            if current.written != current.size:
                raise StagingError(
                    f"{showPath(current.relpath)} was announced with {current.size} bytes"
                    f" but {current.written} arrived: the transfer was abandoned and the previous files kept"
                )
            if current.md5.digest() != md5:
                raise ChecksumMismatch(
                    f"the content of {showPath(current.relpath)} does not match its MD5 checksum:"
                    " the transfer was abandoned and the previous files kept",
                    current.relpath,
                )
            if self._contentProblem is not None:
                with open(current.temporary, "rb") as f:
                    problem = self._contentProblem(current.relpath, f.read())
                if problem is not None:
                    self.refused.append((repr(current.relpath), problem))
                    _closeQuietly(current.fd)
                    _unlinkQuietly(current.temporary)
                    return
            nanoseconds = _nanoseconds(current.mtime)
            try:
                os.fchmod(current.fd, current.mode)
                os.utime(current.fd, ns=(nanoseconds, nanoseconds))
                # No fsync per file: commit() flushes them all at once.
            except OSError as e:
                raise self._writeError(e, current) from e
        except BaseException:
            _closeQuietly(current.fd)
            _unlinkQuietly(current.temporary)
            raise
        try:
            os.close(current.fd)
        except OSError as e:
            _unlinkQuietly(current.temporary)
            raise self._writeError(e, current) from e
        self._keep(_Staged(current.relpath, current.target, current.temporary, os.path.dirname(current.target)))

    @_locked
    def delete(self, relpath: str) -> bool:
        """
        Schedule the deletion of C{relpath} at the commit.  Return C{False},
        and record why in L{refused}, if the policy refuses the path.
        """
        self._checkIdle("delete")
        resolved = self._resolveOrRefuse(relpath)
        if resolved is None:
            return False
        target, _, pruneRoot = resolved
        target = os.path.normpath(target)
        staged = self._staged.pop(target, None)
        if staged is not None:
            _unlinkQuietly(staged.temporary)
        if pruneRoot is not None:
            pruneRoot = os.path.normpath(pruneRoot)
        self._deletions[target] = _Deletion(relpath, target, pruneRoot)
        return True

    @property
    def staged(self) -> tuple[str, ...]:
        """The files staged so far and waiting for the commit, as the sender named them."""
        return tuple(staged.relpath for staged in self._staged.values())

    @property
    def deleting(self) -> tuple[str, ...]:
        """The files scheduled for deletion at the commit, as the sender named them."""
        return tuple(deletion.relpath for deletion in self._deletions.values())

    # Ending

    @_locked
    def commit(self) -> ApplyResult:
        """
        Apply the transfer: rename every staged file over its target, delete
        the scheduled files (one already missing is fine), remove the
        sub-folders of prune roots that the deletions emptied, and flush the
        folders touched to disk.

        A file that cannot be applied does not stop the others: it is listed
        in L{ApplyResult.failed}.
        """
        self._checkIdle("commit")
        self._finished = True
        written: list[str] = []
        deleted: list[str] = []
        failed: list[tuple[str, str]] = []
        touched: set[str] = set()
        if self._staged:
            # Every staged file's data reaches the disk before any rename, so
            # a crash never leaves a renamed but empty file.  One flush for
            # all of them: an fsync per file cost 70% of a 50,000-file sync
            # (bench/integrity.py); and only of the file systems written to,
            # not of every disk of the machine.
            _syncFileSystems({s.folder for s in self._staged.values()})
        for staged in self._staged.values():
            try:
                os.replace(staged.temporary, staged.target)
            except OSError as e:
                _unlinkQuietly(staged.temporary)
                reason = f"{_reason(e)} while renaming it into place at {showPath(staged.target)}"
                failed.append((staged.relpath, reason))
            else:
                written.append(staged.relpath)
                touched.add(staged.folder)
        self._staged.clear()
        for deletion in self._deletions.values():
            try:
                os.unlink(deletion.target)
            except FileNotFoundError:
                deleted.append(deletion.relpath)
            except OSError as e:
                failed.append((deletion.relpath, f"{_reason(e)} while deleting {showPath(deletion.target)}"))
            else:
                deleted.append(deletion.relpath)
                touched.add(os.path.dirname(deletion.target))
        pruned = self._prune(touched)
        self._deletions.clear()
        # New folders: removed if nothing came to them, else their entry made durable.
        for folder in reversed(self._createdFolders):
            _removeEmptyFolder(folder)
            touched.add(os.path.dirname(folder))
        self._createdFolders.clear()
        for folder in sorted(touched):
            _fsyncFolder(folder)
        return ApplyResult(tuple(written), tuple(deleted), tuple(pruned), tuple(failed))

    @_locked
    def abort(self) -> None:
        """
        Give the transfer up: remove every temporary file and every folder
        this transfer created that is still empty.  No other file is touched.
        Calling it again does nothing.
        """
        self._finished = self._aborted = True
        current, self._open = self._open, None
        if current is not None:
            _closeQuietly(current.fd)
            _unlinkQuietly(current.temporary)
        for staged in self._staged.values():
            _unlinkQuietly(staged.temporary)
        self._staged.clear()
        self._deletions.clear()
        for folder in reversed(self._createdFolders):
            _removeEmptyFolder(folder)
        self._createdFolders.clear()

    # Helpers

    def _checkIdle(self, what: str) -> None:
        self._checkAborted()
        if self._finished:
            raise RuntimeError(f"Stager.{what}() called after the transfer was committed or aborted")
        if self._open is not None:
            raise RuntimeError(f"Stager.{what}() called while {self._open.relpath} is still being received")

    def _checkAborted(self) -> None:
        if self._aborted:
            raise StagingError("the transfer was abandoned and the previous files kept")

    def _current(self, what: str) -> _Open:
        self._checkAborted()
        if self._open is None:
            raise RuntimeError(f"Stager.{what}() called with no file being received")
        return self._open

    def _resolveOrRefuse(self, relpath: str) -> tuple[str, int, str | None] | None:
        try:
            return self._resolve(relpath)
        except self._unsafe as e:
            self.refused.append((repr(relpath), str(e) or type(e).__name__))
            return None

    def _makeFolders(self, relpath: str, folder: str) -> bool:
        """
        Create C{folder} and its missing parents, remembering them for
        L{abort}.  Return C{False} (and refuse C{relpath}) if a file stands
        where a folder should.
        """
        missing: list[str] = []
        probe = folder
        while True:
            try:
                mode = os.stat(probe).st_mode
            except FileNotFoundError:
                missing.append(probe)
                parent = os.path.dirname(probe)
                if parent == probe:
                    break
                probe = parent
                continue
            except NotADirectoryError:
                mode = 0
            except OSError as e:
                raise self._error(e, f"while looking at the folder {showPath(probe)}", relpath) from e
            if not stat.S_ISDIR(mode):
                self.refused.append((repr(relpath), f"a file is in the way of the folder {showPath(probe)}"))
                return False
            break
        for path in reversed(missing):
            try:
                os.mkdir(path, FOLDER_MODE)
            except FileExistsError:
                if not os.path.isdir(path):
                    self.refused.append((repr(relpath), f"a file is in the way of the folder {showPath(path)}"))
                    return False
                continue
            except OSError as e:
                raise self._error(e, f"while creating the folder {showPath(path)}", relpath) from e
            self._createdFolders.append(path)
            try:
                os.chmod(path, FOLDER_MODE)
            except OSError as e:
                raise self._error(e, f"while setting the mode of the folder {showPath(path)}", relpath) from e
        return True

    def _createTemporary(self, relpath: str, folder: str, mode: int) -> tuple[str, int]:
        """
        Create a new temporary file in C{folder}, with C{mode} as the umask
        lets it; if the folder vanished since it was made, make it again.
        """
        flags = _CREATE_FLAGS
        remade = False
        while True:
            # A random stem per transfer and a counter: unique in practice,
            # and O_EXCL makes sure (a clash takes a new stem).
            if not self._temporaryStem or self._temporaryCount >= 1 << 32:
                self._temporaryStem = TEMPORARY_PREFIX + secrets.token_hex(_RANDOM_BYTES // 2)
                self._temporaryCount = 0
            temporary = f"{folder}/{self._temporaryStem}{self._temporaryCount:08x}{TEMPORARY_SUFFIX}"
            self._temporaryCount += 1
            try:
                return temporary, os.open(temporary, flags, mode)
            except FileExistsError:
                self._temporaryStem = ""
                continue
            except FileNotFoundError as e:
                if not remade:
                    remade = True
                    self._folders.discard(folder)
                    if self._makeFolders(relpath, folder):
                        self._folders.add(folder)
                        continue
                raise self._error(e, f"while creating a temporary file in {showPath(folder)}", relpath) from e
            except OSError as e:
                raise self._error(e, f"while creating a temporary file in {showPath(folder)}", relpath) from e

    def _writeError(self, error: OSError, current: _Open) -> StagingError:
        doing = f"while writing {showPath(current.relpath)} ({current.written} bytes written)"
        return self._error(error, doing, None)

    def _error(self, error: OSError, doing: str, relpath: str | None) -> StagingError:
        about = f" for {showPath(relpath)}" if relpath is not None else ""
        if error.errno == errno.ENOSPC:
            reason = "no space left on device"
        else:
            reason = _reason(error)
        return StagingError(
            f"{reason} {doing}{about}: the transfer was abandoned and the previous files kept"
        )

    def _prune(self, touched: set[str]) -> list[str]:
        """
        Remove the folders emptied by the deletions, from the deepest up,
        strictly below each deletion's prune root.
        """
        pruned: list[str] = []
        for deletion in self._deletions.values():
            root = deletion.pruneRoot
            if root is None:
                continue
            folder = os.path.dirname(deletion.target)
            while _strictlyUnder(folder, root):
                if not _removeEmptyFolder(folder):
                    break
                pruned.append(folder)
                touched.discard(folder)
                touched.add(os.path.dirname(folder))
                folder = os.path.dirname(folder)
        return pruned


def _strictlyUnder(folder: str, root: str) -> bool:
    """Whether C{folder} is below C{root} (both absolute and normalised)."""
    if folder == root or not os.path.isabs(folder) or not os.path.isabs(root):
        return False
    return os.path.commonpath([folder, root]) == root


def _removeEmptyFolder(folder: str) -> bool:
    """Remove C{folder} if it is an empty folder (never a symlink); say whether it was removed."""
    try:
        os.rmdir(folder)
    except OSError:
        return False
    return True


def _closeQuietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlinkQuietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _nanoseconds(seconds: float) -> int:
    """
    C{seconds} in whole nanoseconds, exactly as C{round(Fraction(seconds) *
    10**9)} (half to even), in integer arithmetic: 50,000 Fractions cost a
    second of a sync.
    """
    numerator, denominator = float(seconds).as_integer_ratio()
    quotient, remainder = divmod(numerator * 1_000_000_000, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        quotient += 1
    return quotient


def _syncFileSystems(folders: set[str]) -> None:
    """
    Flush to disk every file system holding one of C{folders}: C{syncfs(2)}
    once per file system, or C{sync(2)} where C{syncfs} is not available.
    """
    syncfs = _libcSyncfs()
    if syncfs is None:
        os.sync()
        return
    seen: set[int] = set()
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            os.sync()
            return
        try:
            device = os.fstat(fd).st_dev
            if device not in seen:
                seen.add(device)
                if syncfs(fd) != 0:
                    os.sync()
                    return
        finally:
            os.close(fd)


_syncfs: list[Any] = []


def _libcSyncfs() -> Any:
    """The C library's C{syncfs}, or L{None} (not Linux, or no C library found)."""
    if not _syncfs:
        function = None
        try:
            import ctypes
            import ctypes.util

            library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            function = library.syncfs
            function.argtypes = [ctypes.c_int]
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
        _syncfs.append(function)
    return _syncfs[0]


def _fsyncFolder(folder: str) -> None:
    """Make renames and deletions in C{folder} durable; best effort (some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def removeStaleTemporaries(folders: Iterable[str]) -> list[str]:
    """
    Remove the temporary files a killed process left in C{folders} (searched
    recursively, without following symbolic links), and return their paths.

    Only regular files named exactly as a L{Stager} names its temporaries
    are removed.  Call this at start, before any transfer begins: it would
    also remove the temporaries of a transfer in progress.
    """
    removed: list[str] = []
    for top in folders:
        for folder, _, names in os.walk(top, followlinks=False):
            for name in names:
                if not _TEMPORARY_NAME.fullmatch(name):
                    continue
                path = os.path.join(folder, name)
                try:
                    if not stat.S_ISREG(os.lstat(path).st_mode):
                        continue
                    os.unlink(path)
                except OSError:
                    continue
                removed.append(path)
    return removed
