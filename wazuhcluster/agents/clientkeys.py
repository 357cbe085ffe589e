"""
Reading C{etc/client.keys}, the registry of agents, as Wazuh writes it.

One agent a line: C{ID NAME IP KEY}.  Blank lines and C{#} comments are
skipped, and so are removed agents (Wazuh marks them with C{!} before the
name, or C{#} before the line).  This module only reads; registration
comes with the agent registry (issue 4).
"""

from __future__ import annotations

import re

_ID = re.compile(r"\d{3,}\Z")


def knownAgentIDs(path: str) -> frozenset[str]:
    """
    The IDs of the agents registered in the client.keys at C{path} (none if
    the file is missing).  Malformed lines are skipped, not fatal.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return frozenset()
    ids = set()
    for line in lines:
        fields = line.split()
        if len(fields) != 4 or line.lstrip().startswith("#"):
            continue
        agentID, name = fields[0], fields[1]
        if _ID.match(agentID) and agentID != "000" and not name.startswith("!"):
            ids.add(agentID)
    return frozenset(ids)
