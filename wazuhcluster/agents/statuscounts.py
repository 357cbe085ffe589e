"""
The master's agents by status, counted in the time of what changed.

C{cluster_control -a} and the API list every agent by walking 50,000 status
files (about 0.4 s of CPU).  A Prometheus scrape every 15 s must not: it
would cost the master that much each time.  L{StatusCounts} keeps, for each
registered agent that has a status file, its last keep-alive and its state,
and the counts by state:

  - it is rebuilt from any full listing (the one C{-a}, the API and the
    metrics share), so it is as exact as the listing when made;
  - each status the master takes from a worker moves one agent;
  - time moves agents from Active to Disconnected: a heap of the Active
    agents' keep-alives, oldest first, is popped up to the cutoff when the
    counts are read.

Reading the counts therefore costs the agents that changed state since the
last read, not the agents.  What the index cannot see (a status written on
the master by another program, a file removed by hand) is caught at the
next full listing; the caller decides how often that is.
"""

from __future__ import annotations

import heapq
from typing import Iterable

from .agentinfo import statusFileName
from .clientkeys import MANAGER_ID
from .status import AgentRecord, AgentState

__all__ = ["StatusCounts"]

_ACTIVE, _DISCONNECTED, _PENDING = AgentState.ACTIVE.value, AgentState.DISCONNECTED.value, AgentState.PENDING.value


class StatusCounts:
    """Agents by status (as L{wazuhcluster.agents.status.listAgents} decides it), kept up to date."""

    def __init__(self, disconnectionTime: float) -> None:
        self.disconnectionTime = disconnectionTime
        #: When the index was last rebuilt from a listing, or None: it must be.
        self.builtAt: float | None = None
        #: Registered agents, the manager aside.
        self._registered = 0
        #: Status file name -> (last keep-alive, state), for the agents with one.
        self._agents: dict[str, tuple[float, str]] = {}
        self._counts = {_ACTIVE: 0, _DISCONNECTED: 0, _PENDING: 0}
        #: (keep-alive, name) of the Active agents, oldest first; stale entries are skipped.
        self._active: list[tuple[float, str]] = []

    def rebuild(self, records: Iterable[AgentRecord], madeAt: float) -> None:
        """Take the states of a full listing made at C{madeAt}."""
        agents: dict[str, tuple[float, str]] = {}
        registered = 0
        for record in records:
            if record.id == MANAGER_ID:
                continue
            registered += 1
            if record.status in self._counts:
                name = statusFileName(record.name, record.ip)
                if name is not None:
                    agents[name] = (record.last_keep_alive, record.status)
        self._registered, self._agents, self.builtAt = registered, agents, madeAt
        self._recount()

    def _recount(self) -> None:
        counts = dict.fromkeys(self._counts, 0)
        for _, state in self._agents.values():
            counts[state] += 1
        self._counts = counts
        self._active = [(when, name) for name, (when, state) in self._agents.items() if state == _ACTIVE]
        heapq.heapify(self._active)

    def invalidate(self) -> None:
        """The registry changed: the next reader must rebuild from a listing."""
        self.builtAt = None

    def update(self, changes: Iterable[tuple[str, float, bool]], now: float) -> None:
        """
        Statuses the master took: (status file name, keep-alive, whether the
        file is empty), each of a registered agent.
        """
        if self.builtAt is None:
            return  # rebuilt from a listing before it is read
        cutoff = now - self.disconnectionTime
        for name, when, empty in changes:
            old = self._agents.get(name)
            if old is not None:
                self._counts[old[1]] -= 1
            state = _PENDING if empty else _DISCONNECTED if when < cutoff else _ACTIVE
            self._agents[name] = (when, state)
            self._counts[state] += 1
            if state == _ACTIVE:
                heapq.heappush(self._active, (when, name))
        if len(self._active) > 2 * len(self._agents) + 1024:
            self._active = [(w, n) for n, (w, s) in self._agents.items() if s == _ACTIVE]
            heapq.heapify(self._active)

    def counts(self, now: float) -> dict[str, int]:
        """Agents by status at C{now}, the manager (always Active) included."""
        cutoff = now - self.disconnectionTime
        active = self._active
        while active and active[0][0] < cutoff:
            when, name = heapq.heappop(active)
            if self._agents.get(name) == (when, _ACTIVE):
                self._agents[name] = (when, _DISCONNECTED)
                self._counts[_ACTIVE] -= 1
                self._counts[_DISCONNECTED] += 1
        withStatus = sum(self._counts.values())
        return {
            _ACTIVE: self._counts[_ACTIVE] + 1,
            _DISCONNECTED: self._counts[_DISCONNECTED],
            AgentState.NEVER_CONNECTED.value: self._registered - withStatus,
            _PENDING: self._counts[_PENDING],
        }
