"""
The cluster log, in Wazuh's format.

One line per event, as ``wazuh-clusterd`` writes ``logs/cluster.log``::

    2026/11/27 10:12:07 wazuh-clusterd: INFO: [Worker node02] [Main] Successfully connected to master.

The bracketed tag comes from the object that logs: anything with a
C{logTag} attribute, used with a class-level C{Logger()}, tags its lines.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
)
from zope.interface import implementer

_LEVELS = {
    LogLevel.debug: "DEBUG",
    LogLevel.info: "INFO",
    LogLevel.warn: "WARNING",
    LogLevel.error: "ERROR",
    LogLevel.critical: "CRITICAL",
}


def formatWazuhEvent(event: LogEvent) -> str | None:
    """One line of C{cluster.log} for C{event}."""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}: {failure.type.__name__}: {failure.getErrorMessage()}"
        if event.get("log_level") is LogLevel.critical or event.get("log_traceback"):
            text += "\n" + failure.getTraceback()
    if not text:
        return None
    tag = getattr(event.get("log_source"), "logTag", None) or event.get("log_tag")
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(event.get("log_time", time.time())))
    level = _LEVELS.get(event.get("log_level"), "INFO")
    prefix = f"{stamp} wazuh-clusterd: {level}: "
    if tag:
        prefix += f"{tag} "
    return prefix + text.replace("\n", "\n    ") + "\n"


def criticalLine(message: str) -> str:
    """A CRITICAL line of C{cluster.log} with C{message}, logged by the node itself."""
    return formatWazuhEvent(
        {"log_format": "{message}", "message": message, "log_level": LogLevel.critical, "log_time": time.time()}
    ) or ""


@implementer(ILogObserver)
class _Console:
    """
    The terminal of a node in the foreground: CRITICAL lines (the node
    cannot go on) on standard error, every other line on standard output.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str]) -> None:
        self._stdout = FileLogObserver(stdout, formatWazuhEvent)
        self._stderr = FileLogObserver(stderr, formatWazuhEvent)

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        if level is not None and level >= LogLevel.critical:
            self._stderr(event)
        else:
            self._stdout(event)


@implementer(ILogObserver)
class _Fanout:
    def __init__(self, observers: list[ILogObserver]) -> None:
        self._observers = observers

    def __call__(self, event: LogEvent) -> None:
        for observer in self._observers:
            observer(event)


def quietLibraries(event: LogEvent) -> PredicateResult:
    """
    Keep Twisted's own informational chatter ("connection established",
    "Factory starting on ...") out of the log unless debugging: the cluster
    log holds the cluster's events, as Wazuh's does.  Warnings and errors of
    any origin still pass.
    """
    namespace = event.get("log_namespace") or ""
    if namespace.startswith("wazuhcluster"):
        return PredicateResult.maybe
    level = event.get("log_level")
    if level is not None and level >= LogLevel.warn:
        return PredicateResult.maybe
    return PredicateResult.no


def openLogFile(path: str) -> IO[str]:
    """C{cluster.log}, opened for appending, line-buffered."""
    return open(path, "a", buffering=1, encoding="utf-8", errors="replace")


def clusterLogObserver(
    logFile: IO[str], debug: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> ILogObserver:
    """
    The observer of a node: C{cluster.log}, and C{stdout} too when running in
    the foreground (CRITICAL lines on C{stderr} instead, given one), at info
    level or at debug level with C{debug}.
    """
    level = LogLevel.debug if debug else LogLevel.info
    observers: list[ILogObserver] = [FileLogObserver(logFile, formatWazuhEvent)]
    if stdout is not None:
        observers.append(
            FileLogObserver(stdout, formatWazuhEvent) if stderr is None else _Console(stdout, stderr)
        )
    predicates = [LogLevelFilterPredicate(defaultLogLevel=level)]
    if not debug:
        predicates.insert(0, quietLibraries)
    return FilteringLogObserver(_Fanout(observers), predicates)


def stdoutIfForeground(nodaemon: bool) -> IO[str] | None:
    """Standard output when twistd runs in the foreground (C{-n})."""
    # The real one: twistd later points sys.stdout at the log itself.
    return sys.__stdout__ if nodaemon else None


def stderrIfForeground(nodaemon: bool) -> IO[str] | None:
    """Standard error when twistd runs in the foreground (C{-n})."""
    return sys.__stderr__ if nodaemon else None
