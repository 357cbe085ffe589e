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


def missingNodes(requested: Sequence[str] | None, found: Sequence[str], out: IO[str]) -> int:
    """Name the filtered nodes that do not exist; the exit status to return."""
    missing = [name for name in requested or () if name not in found]
    for name in missing:
        out.write(f"Error: node '{name}' is not connected to the cluster.\n")
    return 1 if missing else 0
