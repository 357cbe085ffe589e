"""
The cluster log, in Wazuh's format.

One line per event, as ``wazuh-clusterd`` writes ``logs/cluster.log``::

    2026/11/27 10:12:07 wazuh-clusterd: INFO: [Worker node02] [Main] Successfully connected to master.

The bracketed tag comes from the object that logs: anything with a
C{logTag} attribute, used with a class-level C{Logger()}, tags its lines.
"""

from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from typing import IO, Callable

from twisted.logger import (
    FileLogObserver,
    Logger,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
)
from twisted.python.logfile import LogFile
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


class RotatingLogFile(LogFile):
    """
    C{cluster.log}, rotated when it reaches C{rotateLength} bytes: it becomes
    C{cluster.log.1}, the older ones move up by one, and only
    C{maxRotatedFiles} of them are kept.  Every line is written at once.
    """

    def write(self, data: str | bytes) -> None:
        # LogFile counts the length of what it is given: count bytes.
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        super().write(data)


def openLogFile(
    path: str, rotateBytes: int | None = None, rotatedFiles: int | None = None
) -> IO[str]:
    """
    C{cluster.log}, opened for appending.  With C{rotateBytes}, a
    L{RotatingLogFile} that keeps at most C{rotatedFiles} old files;
    without, a plain line-buffered file.
    """
    if rotateBytes is None:
        return open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    directory, name = os.path.split(os.path.abspath(path))
    return RotatingLogFile(  # type: ignore[return-value]
        name, directory, rotateLength=rotateBytes, maxRotatedFiles=rotatedFiles
    )


class LogThrottle:
    """
    At most one log line per key (a peer's address) and kind of event every
    C{interval} seconds: what a peer can make happen again and again
    (connect, send garbage, be dropped) must not be able to fill the disk.
    The first event is logged at once; the next one logged after the
    interval says how many were left out meanwhile.  At most C{maxKeys}
    keys are remembered (the oldest are forgotten first).
    """

    def __init__(
        self, seconds: Callable[[], float] = time.monotonic, interval: float = 60.0, maxKeys: int = 4096
    ) -> None:
        self.seconds = seconds
        self.interval = interval
        self.maxKeys = maxKeys
        #: (key, kind) -> (time of the last line logged, events left out since).
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def allow(self, key: str, kind: str) -> int | None:
        """
        Whether to log this event now: C{None} to leave it out, else how many
        events of this key and kind were left out before it.
        """
        now = self.seconds()
        entry = self._seen.get((key, kind))
        if entry is not None and now - entry[0] < self.interval:
            self._seen[(key, kind)] = (entry[0], entry[1] + 1)
            return None
        self._seen.pop((key, kind), None)
        self._seen[(key, kind)] = (now, 0)
        while len(self._seen) > self.maxKeys:
            self._seen.popitem(last=False)
        return 0 if entry is None else entry[1]

    def emit(
        self, log: Logger, level: LogLevel, key: str, kind: str, format: str, /, **fields: object
    ) -> bool:
        """
        Log C{format} with C{fields} at C{level} unless throttled; a line
        after left-out ones ends with how many there were.  Whether it was
        logged.
        """
        skipped = self.allow(key, kind)
        if skipped is None:
            return False
        if skipped:
            format += " ({skipped} more like it from {throttleKey} were not logged in the last {interval:.0f} s)"
            fields.update(skipped=skipped, throttleKey=key, interval=self.interval)
        log.emit(level, format, **fields)
        return True


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
