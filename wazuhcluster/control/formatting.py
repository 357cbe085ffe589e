"""
Text output helpers shared by the C{cluster_control} actions.
"""

from __future__ import annotations

import time
from typing import IO, Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: IO[str]) -> None:
    """A table framed by dashed lines, as Wazuh's cluster_control prints it."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    line = "  ".join(cell.ljust(w) for cell, w in zip(headers, widths)).rstrip()
    rule = "-" * len(line)
    out.write(f"{rule}\n{line}\n{rule}\n")
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    out.write(f"{rule}\n")


def date(seconds: float) -> str:
    """A time as Wazuh prints it, or n/a for none."""
    if not seconds:
        return "n/a"
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))


class ControlError(Exception):
    """
    What C{cluster_control} says on standard error, one line per item of
    C{lines} (each without "Error: "), before exiting with status 1.
    """

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines)
        self.lines = lines


def missingNodes(requested: Sequence[str] | None, found: Sequence[str]) -> ControlError | None:
    """The error naming the filtered nodes that are not connected, if any."""
    missing = [name for name in requested or () if name not in found]
    if not missing:
        return None
    return ControlError(*(f"node '{name}' is not connected to the cluster." for name in missing))
