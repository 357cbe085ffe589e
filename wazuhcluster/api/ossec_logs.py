"""
The manager's log, C{HOME/logs/ossec.log}, as the Wazuh 3.x API lists it.

Wazuh daemons write one entry a line::

    2020/06/01 10:12:34 ossec-analysisd: INFO: Total rules enabled: '3652'
    2020/06/01 10:12:35 ossec-remoted[1234] remoted.c:98 at main(): ERROR: ...

An entry is C{timestamp} (C{YYYY-MM-DD hh:mm:ss}), C{tag} (the daemon),
C{level} (C{info}, C{error}, C{warning}, C{critical}, C{debug}) and
C{description}; lines without a date continue the entry before them.  Only
the last L{MAX_LOG_BYTES} of the file are read (3.13 reads the last 2000
lines); a file that is not there is no entry at all (this daemon may run
without a manager beside it).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from twisted.logger import Logger

#: How much of the end of ossec.log is read.
MAX_LOG_BYTES = 32 * 1024 * 1024

#: The fields of an entry.
FIELDS = ("timestamp", "tag", "level", "description")

LEVELS = ("info", "error", "warning", "critical", "debug")

_ENTRY = re.compile(
    r"(\d{4})/(\d\d)/(\d\d) (\d\d:\d\d:\d\d) ([^\s\[]+?)(?:\[\d+\])?(?: \S+:\d+ at \S+\(\))?:"
    r" (DEBUG|INFO|WARNING|ERROR|CRITICAL)(?:\(\d+\))?: ?(.*)"
)

_log = Logger(namespace="wazuhcluster.api.logs")
_lastTruncationLog = [0.0]


def readEntries(path: str, limitBytes: int = MAX_LOG_BYTES) -> list[dict[str, Any]]:
    """The entries of the log at C{path}, oldest first (blocking)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            truncated = size > limitBytes
            if truncated:
                f.seek(size - limitBytes)
            data = f.read(limitBytes)
    except FileNotFoundError:
        return []
    if truncated:
        data = data.partition(b"\n")[2]  # a partial first line
        now = time.monotonic()
        if now - _lastTruncationLog[0] > 600:  # at most once every ten minutes
            _lastTruncationLog[0] = now
            _log.info(
                "[API] {path} is {size} bytes: the logs endpoints read its last {limit} bytes only.",
                path=path, size=size, limit=limitBytes,
            )
    entries: list[dict[str, Any]] = []
    for line in data.decode("utf-8", "replace").splitlines():
        found = _ENTRY.fullmatch(line)
        if found is None:
            if entries and line.strip():
                entries[-1]["description"] += "\n" + line
            continue
        year, month, day, clock, tag, level, description = found.groups()
        entries.append({
            "timestamp": f"{year}-{month}-{day} {clock}",
            "tag": tag,
            "level": level.lower(),
            "description": description,
        })
    return entries


def entries(path: str, typeLog: str, category: str) -> list[dict[str, Any]]:
    """The entries of C{typeLog} (C{all} or a level) and C{category} (a tag), newest first."""
    found = readEntries(path)
    if typeLog and typeLog != "all":
        found = [e for e in found if e["level"] == typeLog]
    if category and category != "all":
        found = [e for e in found if e["tag"] == category]
    found.reverse()
    return found


def summary(path: str) -> dict[str, dict[str, int]]:
    """For each tag, how many entries of each level (and C{all})."""
    result: dict[str, dict[str, int]] = {}
    for entry in readEntries(path):
        counts = result.setdefault(entry["tag"], {"all": 0, **{level: 0 for level in LEVELS}})
        counts["all"] += 1
        counts[entry["level"]] += 1
    return result
