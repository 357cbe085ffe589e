"""
Which files the integrity synchronisation copies from the master to the workers.

The table lives in one data file, ``cluster.json`` beside this module, the way
Wazuh's own cluster keeps it: one rule per folder of the Wazuh home, saying
which files in it are synchronised, whether sub-folders count, and the mode a
worker gives the files it writes.  Every path that arrives from a peer goes
through L{SyncTable.validate} or L{SyncTable.resolve} before anything is read,
written or deleted, because a path a peer chose must never reach a file
outside the table (``../../etc/passwd``, a symbolic link planted in
``etc/rules/``, ``etc/ossec.conf``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import stat
from typing import Any, Callable

from attrs import field, frozen

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "TEMPORARY_PREFIX",
    "SyncRule",
    "SyncTable",
    "TableError",
    "UnsafePath",
    "isInside",
]

#: Names starting with this are the daemon's own temporary files (a file
#: being received, before it is renamed into place): never synchronised,
#: whatever the table says.
TEMPORARY_PREFIX = ".wazuhcluster-"

#: The longest relative path accepted, in UTF-8 bytes (Linux's PATH_MAX).
MAX_PATH_BYTES = 4096

#: The longest file or folder name accepted, in UTF-8 bytes (Linux's NAME_MAX).
MAX_NAME_BYTES = 255

_PACKAGED = "the packaged wazuhcluster/sync/cluster.json"
_MODE = re.compile(r"(?:0o?)?[0-7]{3,4}")
_DOCUMENT_KEYS = frozenset({"_comment", "rules", "excluded_names", "excluded_suffixes"})
_RULE_KEYS = frozenset(
    {"folder", "files", "recursive", "mode", "prune_empty_folders", "extra_valid"}
)
_RULE_OPTIONAL_KEYS = frozenset({"description", "_comment"})
_SHOWN_CHARACTERS = 100


def _show(path: object) -> str:
    """The repr of C{path} for a message, shortened if it is very long."""
    shown = repr(path)
    if len(shown) > _SHOWN_CHARACTERS:
        shown = shown[:_SHOWN_CHARACTERS] + f"... ({len(shown)} characters)"
    return shown


def isInside(path: str, folder: str) -> bool:
    """Whether C{path} is C{folder} or lies under it (both absolute, real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class UnsafePath(ValueError):
    """
    A path from a peer that must not be written or read.

    C{str()} is one sentence naming the path's repr and why it is refused, so
    the caller can log it as it is.  Errors made by L{refusing} (all of this
    module's) also keep the parts in C{path} and C{reason}; C{UnsafePath(message)}
    works too, for callers that refuse a path for their own reasons.
    """

    path: object = None
    reason: str = ""

    @classmethod
    def refusing(cls, path: object, reason: str) -> "UnsafePath":
        """The error for C{path}, refused because of C{reason} (a clause, no final stop)."""
        error = cls(f"refusing the path {_show(path)}: {reason}")
        error.path = path
        error.reason = reason
        return error


class TableError(ValueError):
    """
    The synchronisation table file is unusable; C{str()} is one line naming
    the file, the entry and the fix.
    """


@frozen
class SyncRule:
    """
    One folder of the Wazuh home that the master copies to its workers.

    C{folder} is relative to the home and ends with ``/``.  C{names} is
    L{None} when every file is synchronised, else the only file names that
    are.  C{mode} is what a worker gives the files it writes.  A worker
    removes sub-folders left empty when C{prune_empty_folders}, and sends the
    files only it has back to the master, rather than deleting them, when
    C{extra_valid}.
    """

    folder: str
    names: tuple[str, ...] | None
    recursive: bool
    mode: int
    prune_empty_folders: bool
    extra_valid: bool
    description: str = field(default="", eq=False)


@frozen
class SyncTable:
    """
    Every rule of the synchronisation, and the names that are never synchronised.

    Load it with L{SyncTable.load}; a path belongs to the rule whose folder is
    the longest one containing it, and to no other.
    """

    rules: tuple[SyncRule, ...]
    excluded_names: frozenset[str]
    excluded_suffixes: tuple[str, ...]
    _byFolder: dict[str, SyncRule] = field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_byFolder", {rule.folder: rule for rule in self.rules})

    @classmethod
    def load(cls, path: str | None = None) -> "SyncTable":
        """
        The table in the JSON file at C{path}, by default the one packaged
        with the daemon; raise L{TableError} if the file is unreadable or
        malformed, so a broken table stops the node instead of syncing the
        wrong files.
        """
        if path is None:
            source = _PACKAGED
            try:
                raw = (
                    importlib.resources.files("wazuhcluster.sync")
                    .joinpath("cluster.json")
                    .read_bytes()
                )
            except OSError as e:
                raise TableError(
                    f"{source}: cannot read the synchronisation table ({e.strerror or e}); "
                    "reinstall wazuhcluster"
                ) from None
        else:
            source = path
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except OSError as e:
                raise TableError(
                    f"{source}: cannot read the synchronisation table ({e.strerror or e}); "
                    "check the path and that this user may read it"
                ) from None
        try:
            document = json.loads(raw)
        except UnicodeDecodeError:
            raise TableError(
                f"{source}: the synchronisation table is not UTF-8 text; save it as UTF-8"
            ) from None
        except json.JSONDecodeError as e:
            raise TableError(
                f"{source}:{e.lineno}: the synchronisation table is not valid JSON ({e.msg}); fix the file"
            ) from None
        return cls._fromDocument(document, source)

    @classmethod
    def _fromDocument(cls, document: Any, source: str) -> "SyncTable":
        """The table described by the decoded JSON C{document} read from C{source}."""

        def fail(what: str) -> TableError:
            return TableError(f"{source}: {what}; fix the synchronisation table")

        if not isinstance(document, dict):
            raise fail("the top level must be an object with 'rules', 'excluded_names' and 'excluded_suffixes'")
        unknown = sorted(set(document) - _DOCUMENT_KEYS)
        if unknown:
            raise fail(f"unknown key {unknown[0]!r} at the top level")
        for key in ("rules", "excluded_names", "excluded_suffixes"):
            if key not in document:
                raise fail(f"the top-level key {key!r} is missing")
        rulesDocument = document["rules"]
        if not isinstance(rulesDocument, list) or not rulesDocument:
            raise fail("'rules' must be a non-empty list of rule objects")
        rules: list[SyncRule] = []
        seen: set[str] = set()
        for index, entry in enumerate(rulesDocument, 1):
            rule = _ruleFromDocument(entry, f"rule {index}", fail)
            if rule.folder in seen:
                raise fail(f"rule {index}: the folder {rule.folder!r} has two rules")
            seen.add(rule.folder)
            rules.append(rule)
        names = document["excluded_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise fail("'excluded_names' must be a list of file names")
        suffixes = document["excluded_suffixes"]
        if not isinstance(suffixes, list) or not all(isinstance(s, str) and s for s in suffixes):
            raise fail("'excluded_suffixes' must be a list of non-empty name endings")
        return cls(tuple(rules), frozenset(names), tuple(suffixes))

    def isExcluded(self, name: str) -> bool:
        """
        Whether a file or folder called C{name} is never synchronised: an
        excluded name or ending, or one of the daemon's temporary files.
        """
        return (
            name in self.excluded_names
            or name.endswith(self.excluded_suffixes)
            or name.startswith(TEMPORARY_PREFIX)
        )

    def _exclusionReason(self, name: str) -> str | None:
        """Why C{name} is never synchronised, or L{None} if it may be."""
        if name in self.excluded_names:
            return f"{name!r} is never synchronised"
        for suffix in self.excluded_suffixes:
            if name.endswith(suffix):
                return f"names ending in {suffix!r} are never synchronised"
        if name.startswith(TEMPORARY_PREFIX):
            return f"names starting with {TEMPORARY_PREFIX!r} are this daemon's temporary files"
        return None

    def _match(self, relpath: str) -> tuple[SyncRule | None, str]:
        """The rule of C{relpath} and an empty string, or L{None} and why not."""
        rule = None
        slash = relpath.rfind("/")
        while slash >= 0:
            rule = self._byFolder.get(relpath[: slash + 1])
            if rule is not None:
                break
            slash = relpath.rfind("/", 0, slash)
        if rule is None:
            return None, "it is in no synchronised folder"
        rest = relpath[len(rule.folder) :]
        if not rest:
            return None, f"it names the folder {rule.folder} itself, not a file"
        parts = rest.split("/")
        if len(parts) > 1 and not rule.recursive:
            return None, f"only files directly in {rule.folder} are synchronised, not in its sub-folders"
        if rule.names is not None and parts[-1] not in rule.names:
            only = ", ".join(rule.names)
            return None, f"only {only} {'is' if len(rule.names) == 1 else 'are'} synchronised in {rule.folder}"
        for part in parts:
            reason = self._exclusionReason(part)
            if reason is not None:
                return None, reason
        return rule, ""

    def ruleFor(self, relpath: str) -> SyncRule | None:
        """
        The rule a clean relative path falls under, or L{None} if it is not
        synchronised.  The rule with the longest folder containing the path
        decides alone: in a non-recursive folder only files directly in it
        count, a names list must contain the file's name, and no component
        may be excluded.
        """
        return self._match(relpath)[0]

    def validate(self, relpath: object) -> SyncRule:
        """
        The rule of C{relpath}, a path that came from a peer; raise
        L{UnsafePath} unless it is a clean relative path (text, valid UTF-8,
        no NUL or backslash, no empty, C{.} or C{..} component, within Linux's
        length limits) that the table synchronises.
        """
        if not isinstance(relpath, str):
            raise UnsafePath.refusing(
                relpath, f"a synchronised path must be text (str), not {type(relpath).__name__}"
            )
        if not relpath:
            raise UnsafePath.refusing(relpath, "the path is empty")
        if "\0" in relpath:
            raise UnsafePath.refusing(relpath, "the path contains a NUL character")
        if "\\" in relpath:
            raise UnsafePath.refusing(relpath, "the path contains a backslash; synchronised paths separate folders with '/'")
        if relpath.startswith("/"):
            raise UnsafePath.refusing(relpath, "the path is absolute; synchronised paths are relative to the Wazuh home")
        try:
            size = len(relpath.encode("utf-8"))
        except UnicodeEncodeError:
            raise UnsafePath.refusing(relpath, "the path is not valid UTF-8 text") from None
        if size > MAX_PATH_BYTES:
            raise UnsafePath.refusing(
                relpath, f"the path is {size} bytes long in UTF-8, more than the {MAX_PATH_BYTES} allowed"
            )
        for part in relpath.split("/"):
            if not part:
                raise UnsafePath.refusing(relpath, "the path has an empty component (a doubled or trailing '/')")
            if part == ".":
                raise UnsafePath.refusing(relpath, "the path has a '.' component")
            if part == "..":
                raise UnsafePath.refusing(relpath, "the path climbs up with a '..' component")
            if len(part) * 4 > MAX_NAME_BYTES and len(part.encode("utf-8")) > MAX_NAME_BYTES:
                raise UnsafePath.refusing(
                    relpath, f"a name in the path is longer than {MAX_NAME_BYTES} bytes in UTF-8"
                )
        rule, reason = self._match(relpath)
        if rule is None:
            raise UnsafePath.refusing(relpath, f"the path is not synchronised: {reason}")
        return rule

    def resolve(self, home: str, relpath: object) -> tuple[str, SyncRule]:
        """
        The absolute path under C{home} of C{relpath}, a path from a peer, and
        its rule, once it is safe to write there; raise L{UnsafePath} if it
        is not.

        Beyond L{validate}: the rule's folder may be missing (the writer
        creates it) but must not be a symbolic link, wherever it leads;
        no existing component below it may be a symbolic link or anything but
        a folder; the target, if it exists, must be a regular file; and the
        real path of the nearest existing parent must lie inside the real
        path of the rule's folder.  The writer must still open with
        C{O_NOFOLLOW} and rename atomically, since the disk may change
        between this check and the write.
        """
        return self.resolver(home)(relpath)

    def resolver(self, home: str) -> Callable[[object], tuple[str, SyncRule]]:
        """
        L{resolve} for the many paths of one transfer under C{home}: each
        folder found safe is remembered and not checked again (a transfer of
        50,000 files in a few folders checks those folders once, not 50,000
        times); what is missing or refused is checked again every time.
        """
        homePath = os.path.abspath(home)
        realHome = os.path.realpath(homePath)
        prefix = homePath.rstrip("/") + "/"
        #: Rule folders (absolute) found safe, and their real paths.
        bases: dict[str, str] = {}
        #: Folders under a rule folder found real and inside it.
        folders: set[str] = set()
        #: The folder part of each path validated, with its rule and its
        #: length in UTF-8: a path in the same folder only has its name
        #: checked (most of a transfer's paths share a few folders).
        validFolders: dict[str, tuple[SyncRule, int]] = {}
        isExcluded = self.isExcluded

        def validate(relpath: object) -> SyncRule:
            """L{SyncTable.validate}, with what a known folder spares."""
            if type(relpath) is str:
                folder, slash, name = relpath.rpartition("/")
                known = validFolders.get(folder) if slash else None
                if known is not None:
                    rule, folderBytes = known
                    # Only what is sure to pass; anything else gets the full
                    # check, and its reason.
                    if (
                        name.isascii()
                        and 0 < len(name) <= MAX_NAME_BYTES
                        and folderBytes + 1 + len(name) <= MAX_PATH_BYTES
                        and name != "."
                        and name != ".."
                        and "\0" not in name
                        and "\\" not in name
                        and not isExcluded(name)
                        and (rule.names is None or name in rule.names)
                    ):
                        return rule
            rule = self.validate(relpath)
            assert isinstance(relpath, str)
            folder, slash, _ = relpath.rpartition("/")
            if slash:
                validFolders[folder] = (rule, len(folder.encode("utf-8")))
            return rule

        def resolve(relpath: object) -> tuple[str, SyncRule]:
            rule = validate(relpath)
            assert isinstance(relpath, str)
            base = prefix + rule.folder.rstrip("/")
            target = prefix + relpath
            realBase = bases.get(base)
            if realBase is None:
                realBase = self._checkBase(homePath, realHome, base, relpath)
                if realBase is None:
                    # Nothing below a missing rule folder exists: the writer creates it all.
                    return target, rule
                bases[base] = realBase
            parts = relpath[len(rule.folder) :].split("/")
            current = base
            nearest = base
            walked = []
            for index, part in enumerate(parts):
                current = current + "/" + part
                last = index == len(parts) - 1
                if not last and current in folders:
                    nearest = current
                    continue
                try:
                    st = os.lstat(current)
                except FileNotFoundError:
                    break
                except OSError as e:
                    raise UnsafePath.refusing(relpath, f"cannot check {current} ({e.strerror or e})") from None
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafePath.refusing(
                        relpath,
                        f"{current} is a symbolic link; synchronised files and folders must be real, so remove it",
                    )
                if last:
                    if not stat.S_ISREG(st.st_mode):
                        raise UnsafePath.refusing(
                            relpath, f"{current} exists and is not a regular file; remove it to let the file be written"
                        )
                elif not stat.S_ISDIR(st.st_mode):
                    raise UnsafePath.refusing(relpath, f"{current} is not a folder; remove it to let the file be written")
                else:
                    nearest = current
                    walked.append(current)
            if walked:
                realNearest = os.path.realpath(nearest)
                if not isInside(realNearest, realBase):
                    raise UnsafePath.refusing(relpath, f"{nearest} really is {realNearest}, outside {realBase}")
                folders.update(walked)
            return target, rule

        return resolve

    @staticmethod
    def _checkBase(homePath: str, realHome: str, base: str, relpath: str) -> str | None:
        """
        The real path of the rule folder C{base} if it is safe: a real
        folder (not a symbolic link, even to a folder inside the home: one
        to C{api/configuration} would publish the API's users); L{None} if
        it is missing.
        """
        try:
            baseStat = os.lstat(base)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UnsafePath.refusing(relpath, f"cannot check the folder {base} ({e.strerror or e})") from None
        if stat.S_ISLNK(baseStat.st_mode):
            realBase = os.path.realpath(base)
            where = "outside" if not isInside(realBase, realHome) else "inside"
            raise UnsafePath.refusing(
                relpath,
                f"the folder {base} is a symbolic link to {realBase} ({where} {homePath}); "
                "synchronised folders must be real: replace it with a real folder",
            )
        if not stat.S_ISDIR(baseStat.st_mode):
            raise UnsafePath.refusing(relpath, f"{base} is not a folder; remove it so the folder can be created")
        return os.path.realpath(base)

    def folders(self) -> tuple[str, ...]:
        """The distinct rule folders, relative to the home, in table order (to watch them)."""
        return tuple(dict.fromkeys(rule.folder for rule in self.rules))


def _ruleFromDocument(entry: Any, where: str, fail: Callable[[str], TableError]) -> SyncRule:
    """The L{SyncRule} described by one entry of the table's C{rules} list."""
    if not isinstance(entry, dict):
        raise fail(f"{where} must be an object")
    folder = entry.get("folder")
    if isinstance(folder, str):
        where = f"{where} ({folder!r})"
    missing = sorted(_RULE_KEYS - set(entry))
    if missing:
        raise fail(f"{where}: the key {missing[0]!r} is missing")
    unknown = sorted(set(entry) - _RULE_KEYS - _RULE_OPTIONAL_KEYS)
    if unknown:
        raise fail(f"{where}: unknown key {unknown[0]!r}")
    if (
        not isinstance(folder, str)
        or not folder.endswith("/")
        or folder.startswith("/")
        or "\\" in folder
        or "\0" in folder
        or any(part in ("", ".", "..") for part in folder[:-1].split("/"))
    ):
        raise fail(f"{where}: 'folder' must be a clean relative folder ending with '/', such as \"etc/rules/\"")
    files = entry["files"]
    names: tuple[str, ...] | None
    if files == "all":
        names = None
    elif (
        isinstance(files, list)
        and files
        and all(isinstance(n, str) and n not in ("", ".", "..") and "/" not in n for n in files)
    ):
        names = tuple(files)
    else:
        raise fail(f"{where}: 'files' must be \"all\" or a non-empty list of file names")
    for key in ("recursive", "prune_empty_folders", "extra_valid"):
        if not isinstance(entry[key], bool):
            raise fail(f"{where}: {key!r} must be true or false, not {entry[key]!r}")
    mode = entry["mode"]
    if not isinstance(mode, str) or not _MODE.fullmatch(mode):
        raise fail(f"{where}: 'mode' must be an octal string such as \"0660\", not {mode!r}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise fail(f"{where}: 'description' must be text")
    return SyncRule(
        folder=folder,
        names=names,
        recursive=entry["recursive"],
        mode=int(mode, 8),
        prune_empty_folders=entry["prune_empty_folders"],
        extra_valid=entry["extra_valid"],
        description=description,
    )
