"""
What the API asks of one node in particular (C{/cluster/:node_id/...}, and
C{/manager/...} of the node that took the request): the Wazuh manager beside
it (daemons, installation, C{ossec.conf} as JSON, analysisd's statistics,
C{ossec.log}: L{managerinfo}, L{ossec_logs}), this daemon's counters, its
files, and a restart.  The node that the request names runs these; a
request that names another node is carried there over the cluster link
(L{wazuhcluster.api.nodecalls}).

Files: C{etc/ossec.conf}, C{etc/rules/*.xml}, C{etc/decoders/*.xml},
C{etc/lists/*}, and (read only) C{ruleset/rules/*.xml} and
C{ruleset/decoders/*.xml}, relative to the home, resolved without following
a symbolic link, and never the names integrity excludes (temporaries...):
anything else is error 704.  Written files are checked first (XML for rules
and decoders, C{key:value} lines for lists, the configuration Wazuh and this
daemon read for C{ossec.conf}), then written to a temporary name and renamed
into place; on the master, integrity sync then takes rules, decoders and
lists to the workers.
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

from ..config import ConfigError, NoClusterSection, parse_cluster_config
from ..files import writeFileAtomically
from ..home import WazuhHome
from ..stats import NodeStats
from ..sync.table import SyncTable, UnsafePath
from . import managerinfo, ossec_logs
from .cdblist import ListProblem, checkList
from .envelope import ApiError
from .filters import ListQuery

#: The manager's configuration, which the files endpoints read and replace.
OSSEC_CONF = "etc/ossec.conf"

#: The files the files endpoints serve (the 3.x API's): ossec.conf, rules,
#: decoders and lists under etc/, and Wazuh's default rules and decoders
#: under ruleset/ (read only).
_FILE = re.compile(
    r"etc/ossec\.conf|(?:etc|ruleset)/(?:rules|decoders)/[A-Za-z0-9_\-./]+\.xml|etc/lists/[A-Za-z0-9_\-./]+"
)

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
        home = self.home
        path = str(arguments.get("path", ""))
        if operation == "info":
            return await self.runInThread(self.info)
        if operation == "status":
            return await self.runInThread(managerinfo.daemonStatus, home)
        if operation == "configuration":
            section, field = str(arguments.get("section", "")), str(arguments.get("field", ""))
            if field and not section:
                raise ApiError(604, "Missing field: 'section'")
            return await self.runInThread(managerinfo.ossecConfJson, home, section, field)
        if operation == "stats":
            return await self.runInThread(managerinfo.totals, home, str(arguments.get("date", "")))
        if operation == "stats.hourly":
            return await self.runInThread(managerinfo.hourly, home)
        if operation == "stats.weekly":
            return await self.runInThread(managerinfo.weekly, home)
        if operation == "stats.cluster":
            return {"node": self.nodeName, "since": _date(self.stats.startedAt), **self.stats.snapshot()}
        if operation == "logs":
            listQuery = ListQuery.fromQuery(arguments.get("list") or {})
            found = await self.runInThread(
                ossec_logs.entries, self.logPath, str(arguments.get("type_log", "all")),
                str(arguments.get("category", "all")),
            )
            return listQuery.page(found, ossec_logs.FIELDS)
        if operation == "logs.summary":
            return await self.runInThread(ossec_logs.summary, self.logPath)
        if operation == "files.get":
            return await self.runInThread(self.readFile, path, arguments.get("validation") == "true")
        if operation == "files.put":
            return await self.runInThread(self.writeFile, path, body, arguments.get("overwrite") == "true")
        if operation == "files.delete":
            return await self.runInThread(self.deleteFile, path)
        if operation == "restart":
            return self.restart()
        raise ApiError(3, f"unknown node operation {operation!r}")

    @property
    def logPath(self) -> str:
        return self.home.path("logs", "ossec.log")

    def info(self) -> dict[str, Any]:
        """The 3.x manager information, and the node's (blocking: reads ossec-init.conf)."""
        offset = -time.altzone if time.localtime().tm_isdst > 0 else -time.timezone
        installed = managerinfo.installation(self.home)
        return {
            "path": installed.get("DIRECTORY", self.home.root),
            "version": installed.get("VERSION", f"v{self.version}"),
            "compilation_date": installed.get("DATE", "n/a"),
            "type": installed.get("TYPE", "server"),
            "max_agents": "N/A",
            "openssl_support": "yes",
            "ruleset_version": managerinfo.rulesetVersion(self.home),
            "tz_offset": f"{'+' if offset >= 0 else '-'}{abs(offset) // 3600:02d}{abs(offset) % 3600 // 60:02d}",
            "tz_name": time.strftime("%Z"),
            "node": self.nodeName,
            "cluster": self.clusterName,
            "node_type": self.nodeType,
            "cluster_version": f"v{self.version}",
            "started": _date(self.stats.startedAt),
        }

    # Files (blocking: run in a thread).

    def _resolve(self, relpath: str, writing: bool) -> str:
        """The file C{relpath} names, if the files endpoints serve it (else 704)."""
        if "./" in relpath or relpath.startswith("/") or not _FILE.fullmatch(relpath):
            raise ApiError(704, f"{relpath!r}: give etc/ossec.conf, etc/rules/*.xml, etc/decoders/*.xml, "
                                f"etc/lists/* or (to read) ruleset/rules/*.xml, ruleset/decoders/*.xml")
        if relpath.startswith("ruleset/") or relpath == OSSEC_CONF:
            if writing and relpath != OSSEC_CONF:
                raise ApiError(704, f"{relpath!r}: Wazuh's default ruleset is read-only; write under etc/")
            target = os.path.join(os.path.abspath(self.home.root), relpath)
            if os.path.realpath(target) != os.path.join(os.path.realpath(self.home.root), relpath):
                raise ApiError(704, f"{relpath!r} leads through a symbolic link")
            return target
        try:
            target, _ = self.table.resolve(self.home.root, relpath)
        except UnsafePath as e:
            raise ApiError(704, str(e)) from None
        return target

    def readFile(self, relpath: str, validation: bool = False) -> str:
        target = self._resolve(relpath, writing=False)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ApiError(1005, f"{relpath}: no such file") from None  # 3.x: 1005 to read, 1906 to delete
        except OSError as e:
            raise ApiError(704, f"{relpath}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
        if len(data) > MAX_FILE_SIZE:
            raise ApiError(614, f"{relpath} is larger than {MAX_FILE_SIZE} bytes")
        text = data.decode("utf-8", "replace")
        if validation:
            try:
                _check(relpath, text)
            except ApiError as e:
                # 3.x reports a file that does not validate as a framework error.
                raise ApiError(1800 if e.code == 705 else 1113, f"{relpath}: {e.message}") from None
        return text

    def writeFile(self, relpath: str, body: bytes, overwrite: bool) -> str:
        target = self._resolve(relpath, writing=True)
        if len(body) > MAX_FILE_SIZE:
            raise ApiError(614, f"the file is larger than {MAX_FILE_SIZE} bytes")
        if not body.strip():
            raise ApiError(1909, relpath)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(1911, f"{relpath} is not UTF-8 text") from None
        _check(relpath, text)
        if os.path.lexists(target) and not overwrite:
            raise ApiError(1905, f"{relpath}; set overwrite=true to replace it")
        os.makedirs(os.path.dirname(target), mode=0o770, exist_ok=True)
        writeFileAtomically(target, body, 0o660)
        self.log.info("File {path} written through the API.", path=relpath)
        return "File updated successfully"  # 3.x's answer

    def deleteFile(self, relpath: str) -> str:
        if relpath == OSSEC_CONF:
            raise ApiError(704, f"{relpath!r}: the configuration can be replaced, not deleted")
        target = self._resolve(relpath, writing=True)
        try:
            os.unlink(target)
        except FileNotFoundError:
            raise ApiError(1906, relpath) from None
        except IsADirectoryError:
            raise ApiError(704, f"{relpath} is a folder") from None
        self.log.info("File {path} deleted through the API.", path=relpath)
        return "File was deleted"  # 3.x's answer

    def restart(self) -> str:
        command = list(self.restartCommand)
        try:
            subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home.root,
            )
        except OSError as e:
            raise ApiError(1900, f"{' '.join(command)}: {e.strerror or e}") from None
        self.log.info("Restart requested through the API: ran {command}.", command=" ".join(command))
        return "Restarting manager"  # 3.x's answer


def _check(relpath: str, text: str) -> None:
    """Check a file before it is written: 703 or 705 if it is not what its path says."""
    if relpath == OSSEC_CONF:
        _checkOssecConf(text)
    elif relpath.startswith("etc/lists/"):
        _checkList(text)
    else:
        _checkXml(text)


def _checkOssecConf(text: str) -> None:
    """
    A Wazuh configuration: the XML Wazuh reads (several C{<ossec_config>}
    blocks), and a C{<cluster>} section this daemon would start with.
    """
    try:
        parse_cluster_config(text, OSSEC_CONF)
    except NoClusterSection:
        pass
    except ConfigError as e:
        raise ApiError(703, str(e)) from None
    if not re.search(r"<ossec_config[\s>]", text):
        raise ApiError(703, f"{OSSEC_CONF} has no <ossec_config> block")


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
