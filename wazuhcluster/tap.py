"""
C{twistd wazuhcluster}: run a cluster node.

    twistd -n wazuhcluster --config /var/ossec/etc/ossec.conf

Without C{--home}, the home is the folder above the config file's folder.
Without twistd's own C{--pidfile}, the pid file is
C{HOME/var/run/wazuh-clusterd.pid}, so two nodes on one machine never clash.
The log goes to C{HOME/logs/cluster.log} (rotated by size, see
C{cluster.log_rotate_bytes}), and to standard output with C{-n}.
"""

from __future__ import annotations

import os
import sys

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized

from .config import ConfigError
from .home import WazuhHome
from .logs import clusterLogObserver, openLogFile, stdoutIfForeground
from .node import loadNode, makeNodeService


class Options(usage.Options):
    synopsis = "--config HOME/etc/ossec.conf [--home HOME] [--debug]"
    longdesc = "Run a Wazuh cluster node (master or worker) as the <cluster> section of ossec.conf says."
    optParameters = [
        ["config", "c", None, "The node's ossec.conf."],
        ["home", None, None, "The Wazuh home folder (default: the folder above the config's folder)."],
    ]
    optFlags = [["debug", "d", "Log debug messages too."]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required: the path of the node's ossec.conf")


def _fail(message: str) -> None:
    print(f"wazuh-clusterd: CRITICAL: {message}", file=sys.stderr)
    raise SystemExit(1)


class _LoggingNode(MultiService):
    """
    The node's top service.  When twistd adds it to its application, it also
    gives the application the node's log observer, which is where twistd
    looks for one (twistd's C{--logger} option still wins).
    """

    def __init__(self, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer

    def setServiceParent(self, parent: object) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)


def _pidFileInHome(options: Options, home: WazuhHome) -> None:
    twistdOptions = getattr(options, "parent", None)
    if twistdOptions is None or "pidfile" not in twistdOptions:
        return
    if twistdOptions["pidfile"] == os.path.abspath("twistd.pid"):
        pidFile = home.pidFile
        if os.path.exists(pidFile):
            try:
                pid = int(open(pidFile).read().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                os.unlink(pidFile)
            except PermissionError:
                _fail(f"another process (pid file {pidFile}) runs a node with home {home.root}")
            else:
                _fail(f"a node with home {home.root} is already running (pid {pid}, {pidFile})")
        twistdOptions["pidfile"] = pidFile


def nodeService(configPath: str, home: str | None, debug: bool, foreground: bool) -> _LoggingNode:
    """
    The top service of a node and its log observer, or exit with one line
    saying what is wrong.  Used by the twistd plugin and the .tac files.
    """
    from twisted.internet import reactor

    try:
        setup = loadNode(configPath, home)
    except ConfigError as e:
        _fail(str(e))
    if setup.config.disabled:
        print("wazuh-clusterd: INFO: Cluster disabled.", file=sys.stderr)
        raise SystemExit(0)
    wazuhHome = setup.home
    try:
        wazuhHome.makeFolders()
        logFile = openLogFile(
            wazuhHome.clusterLog, setup.options.log_rotate_bytes, setup.options.log_rotated_files
        )
    except OSError as e:
        _fail(f"cannot write under {wazuhHome.root}: {e}")
    debug = debug or setup.options.debug > 0
    top = _LoggingNode(clusterLogObserver(logFile, debug, stdoutIfForeground(foreground)))
    top.home = wazuhHome
    try:
        makeNodeService(setup, reactor, foreground).setServiceParent(top)
    except ConfigError as e:
        _fail(str(e))
    return top


def makeService(options: Options) -> IService:
    """The node's service, for C{twistd wazuhcluster}."""
    twistdOptions = getattr(options, "parent", None) or {}
    top = nodeService(
        options["config"], options["home"], options["debug"], bool(twistdOptions.get("nodaemon", True))
    )
    _pidFileInHome(options, top.home)
    return top
