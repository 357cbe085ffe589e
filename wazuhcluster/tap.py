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
import signal
import sys
from typing import IO, Any, Callable

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized

from .config import ConfigError, NoClusterSection
from .home import WazuhHome
from .logs import clusterLogObserver, criticalLine, openLogFile, stderrIfForeground, stdoutIfForeground
from .node import NodeService, loadNode, makeNodeService, portProblem


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


def _fail(message: str, logFile: IO[str] | None = None) -> None:
    """
    Stop before anything started: one line on standard error (and in
    C{cluster.log} once it is open), exit status 1.
    """
    print(f"wazuh-clusterd: CRITICAL: {message}", file=sys.stderr)
    if logFile is not None:
        logFile.write(criticalLine(message))
    raise SystemExit(1)


def notConfigured(error: NoClusterSection, configPath: str) -> None:
    """
    A manager whose ossec.conf has no <cluster> section: like Wazuh's own
    daemon with the cluster disabled, say so and exit 0, so that a service
    manager does not restart it in a loop.
    """
    if error.misplaced:
        _fail(str(error))
    print(
        f"wazuh-clusterd: INFO: The cluster is not configured in {configPath} (it has no <cluster>"
        " section): add one with <disabled>no</disabled> to run this node in a cluster.",
        file=sys.stderr,
    )
    raise SystemExit(0)


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


def _isNode(pid: int) -> bool:
    """
    Whether process C{pid} is a running cluster node.  Without /proc (or
    when it cannot be read) any process counts, to be safe.
    """
    if pid == os.getpid():
        return False  # a pid file left by a previous life of this very pid
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            arguments = f.read().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return any(b"wazuhcluster" in argument for argument in arguments)


def _pidFileInHome(options: Options, home: WazuhHome) -> None:
    twistdOptions = getattr(options, "parent", None)
    if twistdOptions is None or "pidfile" not in twistdOptions:
        return
    if twistdOptions["pidfile"] == os.path.abspath("twistd.pid"):
        pidFile = home.pidFile
        if os.path.exists(pidFile):
            try:
                pid = int(open(pidFile).read().strip() or 0)
                if pid <= 0:
                    raise ValueError(pid)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                running = False
            except PermissionError:
                running = _isNode(pid)
                if running:
                    _fail(f"another process (pid file {pidFile}) runs a node with home {home.root}")
            else:
                running = _isNode(pid)
                if running:
                    _fail(f"a node with home {home.root} is already running (pid {pid}, {pidFile})")
            if not running:
                os.unlink(pidFile)
                print(
                    f"wazuh-clusterd: INFO: Removed the stale pid file {pidFile}: no node runs with"
                    " that pid any more.",
                    file=sys.stderr,
                )
        twistdOptions["pidfile"] = pidFile


def _stopCleanlyOnSignals(node: NodeService, reactor: Any) -> None:
    """
    Make SIGTERM, SIGINT and SIGHUP a requested stop: the node stops its
    services, logs that it stopped, removes its pid file, and twistd exits
    with status 0 (by default, twistd ends itself with the signal, status
    143 after SIGTERM, and SIGHUP killed it without a word).  A signal that
    comes before the reactor runs stops it as soon as it does.
    """

    def requested(signum: int, frame: object) -> None:
        node.stopReason = signal.Signals(signum).name
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, requested)


def nodeService(
    configPath: str,
    home: str | None,
    debug: bool,
    foreground: bool,
    checkHome: Callable[[WazuhHome], None] | None = None,
) -> _LoggingNode:
    """
    The top service of a node and its log observer, or exit with one line
    saying what is wrong.  Used by the twistd plugin and the .tac files.
    C{checkHome} runs before the ports are checked: another node running
    with this home is said as such, not as its port being taken.
    """
    from twisted.internet import reactor

    try:
        setup = loadNode(configPath, home)
    except NoClusterSection as e:
        notConfigured(e, configPath)
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
        _fail(f"cannot write under {wazuhHome.root}: {e.strerror or e}")
    if checkHome is not None:
        checkHome(wazuhHome)
    try:
        node = makeNodeService(setup, reactor, foreground)
    except ConfigError as e:
        _fail(str(e), logFile)
    # After every configuration error (TLS files, the API's certificate):
    # those are what to fix first.
    problem = portProblem(setup)
    if problem:
        _fail(problem, logFile)
    debug = debug or setup.options.debug > 0
    top = _LoggingNode(
        clusterLogObserver(logFile, debug, stdoutIfForeground(foreground), stderrIfForeground(foreground))
    )
    top.home = wazuhHome
    node.setServiceParent(top)
    top.node = node
    # twistd starts the services before the reactor runs, and the reactor
    # then installs its own handlers: ours go in now, and again over those.
    _stopCleanlyOnSignals(node, reactor)
    reactor.callWhenRunning(_stopCleanlyOnSignals, node, reactor)
    return top


def makeService(options: Options) -> IService:
    """The node's service, for C{twistd wazuhcluster}."""
    twistdOptions = getattr(options, "parent", None) or {}
    top = nodeService(
        options["config"], options["home"], options["debug"], bool(twistdOptions.get("nodaemon", True)),
        checkHome=lambda home: _pidFileInHome(options, home),
    )

    def reportStartFailure(message: str) -> None:
        # A daemonizing twistd's first process waits on this pipe and shows
        # the terminal what it reads (as a bytes repr: this is only for a
        # port taken after the check before start, which says it plainly).
        statusPipe = twistdOptions.get("statusPipe")
        if statusPipe is not None:
            os.write(statusPipe, b"  " + message.encode("utf-8", "replace")[:98])
            os.close(statusPipe)
            twistdOptions["statusPipe"] = None

    top.node.reportStartFailure = reportStartFailure
    return top
