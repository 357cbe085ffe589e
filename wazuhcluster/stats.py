"""
Counters of one node's cluster daemon since it started, for the API's
C{GET /cluster/:node_id/stats}.

Each part of the daemon counts what it does in the node's one L{NodeStats}
(the builder hands it over; a part built alone, in a test, counts in its
own).  Counting is an addition on the reactor thread: no lock, no cost.
The node's Prometheus metrics travel with its counters (L{NodeStats.metrics}),
so that every part that counts can also record a labelled figure.
"""

from __future__ import annotations

from typing import Any

from .metrics.registry import NodeMetrics

#: Every counter, with what it counts.
COUNTERS = {
    "keepalives_sent": "keep-alives a worker sent and the master answered",
    "keepalives_received": "keep-alives the master received",
    "integrity_syncs": "integrity syncs completed (on the master: with any worker)",
    "integrity_files_sent": "files sent by integrity syncs (master) or as group files (worker)",
    "integrity_files_received": "files received and put in place",
    "integrity_bytes_sent": "compressed bytes of files sent",
    "integrity_bytes_received": "compressed bytes of files received",
    "agentinfo_syncs": "agent-info syncs completed",
    "agentinfo_statuses_sent": "agent statuses sent (worker)",
    "agentinfo_statuses_received": "agent statuses received and taken (master)",
    "agentinfo_bytes_sent": "compressed bytes of agent statuses sent (worker)",
    "errors": "syncs or transfers that failed",
}


class NodeStats:
    """The counters of one node, and when it started."""

    def __init__(self, startedAt: float = 0.0) -> None:
        self.startedAt = startedAt
        self._counts = dict.fromkeys(COUNTERS, 0)
        #: The node's Prometheus metrics (docs/metrics.md).
        self.metrics = NodeMetrics()

    def count(self, name: str, n: int = 1) -> None:
        self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> dict[str, Any]:
        return dict(self._counts)
