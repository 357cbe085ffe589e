"""
The event loop's delay: the one figure that shows a stalled reactor.

A timer is due every L{INTERVAL} seconds; how late it fires is observed
into C{wazuhcluster_reactor_lag_seconds}.  A node whose reactor is held by
a long computation shows it here before anything else does (keep-alives
late, API slow), whatever the computation was.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Histogram
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime

__all__ = ["INTERVAL", "ReactorLagProbe"]

#: Seconds between two timers.
INTERVAL = 0.1


class ReactorLagProbe(Service):
    """Observe, every L{INTERVAL} seconds, how late the timer fired."""

    def __init__(self, clock: IReactorTime, histogram: Histogram, interval: float = INTERVAL) -> None:
        self.clock = clock
        self.histogram = histogram
        self.interval = interval
        self._call: Any = None
        self._due = 0.0

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._fired)

    def _fired(self) -> None:
        self.histogram.observe(max(self.clock.seconds() - self._due, 0.0))
        self._schedule()
