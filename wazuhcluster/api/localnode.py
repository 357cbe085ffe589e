"""
What the API asks of one node in particular (C{/cluster/:node_id/...}): its
daemon's information, status and counters, its rule, decoder and list files,
and a restart.  The node that the request names runs these; a request that
names another node is carried there over the cluster link
(L{wazuhcluster.api.nodecalls}).

Files: only paths under C{etc/rules/}, C{etc/decoders/} and C{etc/lists/},
relative to the home, resolved without following a symbolic link out of
those folders, and never the names integrity excludes (temporaries,
C{ossec.conf}...): anything else is error 704.  Written files are checked
first (XML for rules and decoders, C{key:value} lines for lists), then
written to a temporary name and renamed into place; on the master, integrity
sync then takes them to the workers.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from ..files import writeFileAtomically
from ..home import WazuhHome
from ..stats import NodeStats
from ..sync.table import SyncTable, UnsafePath
from .cdblist import ListProblem, checkList
from .envelope import ApiError

#: The folders whose files the API reads and writes.
FILE_FOLDERS = ("etc/rules/", "etc/decoders/", "etc/lists/")

#: The largest file the API writes.
MAX_FILE_SIZE = 16 * 1024 * 1024



class LocalNode:
    """The operations a node runs for API requests that name it."""

    log = Logger()

    def __init__(
        self,
        home: WazuhHome,
        nodeName: str,
        clusterName: str,
        nodeType: str,
        version: str,
        stats: NodeStats,
        restartCommand: Sequence[str],
        runInThread: Callable[..., Deferred] = deferToThread,
    ) -> None:
        self.home = home
        self.nodeName = nodeName
        self.clusterName = clusterName
        self.nodeType = nodeType
        self.version = version
        self.stats = stats
        self.restartCommand = tuple(restartCommand)
        self.runInThread = runInThread
        self.table = SyncTable.load()
        self.logTag = f"[{'Master' if nodeType == 'master' else 'Worker ' + nodeName}] [API]"

    async def run(self, operation: str, arguments: dict[str, Any], body: bytes) -> Any:
        """Run C{operation}; raises L{ApiError} for what the client did wrong."""
        if operation == "info":
            return self.info()
        if operation == "status":
            return {"wazuh-clusterd": "running"}
        if operation == "stats":
            return {"node": self.nodeName, "since": _date(self.stats.startedAt), **self.stats.snapshot()}
        if operation == "files.get":
            return await self.runInThread(self.readFile, str(arguments.get("path", "")))
        if operation == "files.put":
            return await self.runInThread(
                self.writeFile, str(arguments.get("path", "")), body, bool(arguments.get("overwrite"))
            )
        if operation == "files.delete":
            return await self.runInThread(self.deleteFile, str(arguments.get("path", "")))
        if operation == "restart":
            return self.restart()
        raise ApiError(600, f"unknown node operation {operation!r}")

    def info(self) -> dict[str, Any]:
        offset = -time.altzone if time.localtime().tm_isdst > 0 else -time.timezone
        return {
            "node": self.nodeName,
            "cluster": self.clusterName,
            "type": self.nodeType,
            "version": f"v{self.version}",
            "path": self.home.root,
            "started": _date(self.stats.startedAt),
            "tz_offset": f"{'+' if offset >= 0 else '-'}{abs(offset) // 3600:02d}{abs(offset) % 3600 // 60:02d}",
            "tz_name": time.strftime("%Z"),
        }

    # Files (blocking: run in a thread).

    def _resolve(self, relpath: str) -> str:
        if not any(relpath.startswith(folder) for folder in FILE_FOLDERS) or relpath.endswith("/"):
            raise ApiError(704, f"{relpath!r}")
        try:
            target, _ = self.table.resolve(self.home.root, relpath)
        except UnsafePath as e:
            raise ApiError(704, str(e)) from None
        return target

    def readFile(self, relpath: str) -> str:
        target = self._resolve(relpath)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ApiError(1005, relpath, status=404) from None
        except OSError as e:
            raise ApiError(704, f"{relpath}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
        if len(data) > MAX_FILE_SIZE:
            raise ApiError(600, f"{relpath} is larger than {MAX_FILE_SIZE} bytes")
        return data.decode("utf-8", "replace")

    def writeFile(self, relpath: str, body: bytes, overwrite: bool) -> dict[str, Any]:
        target = self._resolve(relpath)
        if len(body) > MAX_FILE_SIZE:
            raise ApiError(600, f"the file is larger than {MAX_FILE_SIZE} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(703 if not relpath.startswith("etc/lists/") else 705, "the file is not UTF-8 text") from None
        if relpath.startswith("etc/lists/"):
            _checkList(text)
        else:
            _checkXml(text)
        if os.path.lexists(target) and not overwrite:
            raise ApiError(1905, relpath)
        os.makedirs(os.path.dirname(target), mode=0o770, exist_ok=True)
        writeFileAtomically(target, body, 0o660)
        self.log.info("File {path} written through the API.", path=relpath)
        return {"msg": f"File {relpath} was updated successfully"}

    def deleteFile(self, relpath: str) -> dict[str, Any]:
        target = self._resolve(relpath)
        try:
            os.unlink(target)
        except FileNotFoundError:
            raise ApiError(1005, relpath, status=404) from None
        except IsADirectoryError:
            raise ApiError(704, f"{relpath} is a folder") from None
        self.log.info("File {path} deleted through the API.", path=relpath)
        return {"msg": f"File {relpath} was deleted successfully"}

    def restart(self) -> dict[str, Any]:
        command = list(self.restartCommand)
        try:
            subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home.root,
            )
        except OSError as e:
            raise ApiError(1750, f"{' '.join(command)}: {e.strerror or e}", status=500) from None
        self.log.info("Restart requested through the API: ran {command}.", command=" ".join(command))
        return {"msg": f"Restarting node {self.nodeName}"}


def _checkXml(text: str) -> None:
    """A rules or decoders file: any number of elements and comments, well formed."""
    try:
        ElementTree.fromstring(f"<wazuhcluster-file>{text}</wazuhcluster-file>")
    except ElementTree.ParseError as e:
        line, _ = e.position
        raise ApiError(703, f"line {line}: {str(e).split(':')[0]}") from None


def _checkList(text: str) -> None:
    """A CDB list: C{key:value} lines, checked in linear time (L{cdblist})."""
    try:
        checkList(text)
    except ListProblem as e:
        raise ApiError(705, str(e)) from None


def _date(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "n/a"
