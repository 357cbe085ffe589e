"""
What the master remembers of each worker's synchronisations, for
C{cluster_control -i} and the API.
"""

from __future__ import annotations

from attrs import define


@define
class IntegrityStatus:
    """The last integrity sync of one worker (times on the master's clock; 0 for never)."""

    running: bool = False
    date_start: float = 0.0
    date_end: float = 0.0
    shared: int = 0
    missing: int = 0
    extra: int = 0
    extra_valid: int = 0
    last_error: str = ""
    # Group assignments received from the worker ("extra valid" files).
    agentgroups_running: bool = False
    agentgroups_start: float = 0.0
    agentgroups_end: float = 0.0
    agentgroups_total: int = 0
