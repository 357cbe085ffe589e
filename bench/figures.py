"""
What the benchmarks share: a free port, percentiles, and the table of
figures each prints as it goes and again at the end.

Every benchmark imports this module before the daemon's: it puts the
checkout on C{sys.path}, so that C{python bench/NAME.py} runs from a
checkout without installing.
"""

from __future__ import annotations

import os
import socket
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def freePort() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    """The C{fraction} percentile (0..1) of C{values}, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Results:
    """Every figure, in the order it is printed in the summary."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def add(self, label: str, value: str) -> None:
        self.rows.append((label, value))
        print(f"  {label}: {value}", flush=True)

    def section(self, title: str) -> None:
        self.rows.append(("## " + title, ""))
        print(f"\n== {title}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  NOTE: {text}", flush=True)

    def table(self) -> str:
        width = max(len(label) for label, _ in self.rows if not label.startswith("## "))
        line = "-" * (width + 50)
        out = []
        for label, value in self.rows:
            if label.startswith("## "):
                out += [line, label[3:], line]
            else:
                out.append(f"{label.ljust(width)}  {value}")
        out.append(line)
        return "\n".join(out)
