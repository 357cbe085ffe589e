"""
Commands the master sends to a worker.
"""

from __future__ import annotations

from twisted.protocols import amp


class Ping(amp.Command):
    """
    Is this connection still alive?  The master asks an already connected
    worker when a second connection claims the same node name: a live one
    answers, a dead one (its network went away) does not and is replaced.
    """

    arguments: list = []
    response: list = []


class IntegrityChanged(amp.Command):
    """
    The master's synchronised files changed (inotify saw it): the worker
    syncs now instead of at its next cycle.  No answer needed.
    """

    arguments: list = []
    response: list = []
    requiresAnswer = False
