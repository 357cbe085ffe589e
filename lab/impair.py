"""
A bad network between a worker and its master, in user space: a TCP relay
that delays everything by a fixed latency and, on a fraction of the chunks
it relays, stalls as a lost segment would.

The lab uses C{tc netem} where the kernel has it; the kernels of these lab
machines do not (C{sch_netem} is missing), so this relay stands in for it.
A dropped TCP segment costs the application a stall of at least one
retransmission timeout (200 ms on Linux, more under repeated loss), never
missing or reordered bytes: so "loss" here is a stall of C{--stall} seconds
(default 0.3) on that fraction of chunks, order kept.  Both directions are
impaired; each chunk waits for the one before it.

    python -m lab.impair --listen 127.0.0.1:1517 --to 127.0.0.1:1516 --delay 0.2 --loss 0.05
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import deque
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol


class _Side(protocol.Protocol):
    """
    One end of a relayed connection; what it receives goes to C{peer} late,
    in order: each timer releases the oldest chunk waiting, never the one it
    was set for (timers due at the same time fire in no promised order).
    """

    def __init__(self, relay: "_Relay") -> None:
        self.relay = relay
        self.peer: _Side | None = None
        self.waiting: deque[bytes | None] = deque()
        self.early: list[bytes] = []
        self.releaseAt = 0.0

    def _later(self, item: bytes | None, extra: float) -> None:
        now = reactor.seconds()
        self.releaseAt = max(self.releaseAt, now + self.relay.delay + extra)
        self.waiting.append(item)
        reactor.callLater(self.releaseAt - now, self._releaseOldest)

    def dataReceived(self, data: bytes) -> None:
        self._later(data, self.relay.stall if random.random() < self.relay.loss else 0.0)

    def connectionLost(self, reason: Any = None) -> None:
        # The close travels late too, after the data before it.
        self._later(None, 0.0)

    def _releaseOldest(self) -> None:
        item = self.waiting.popleft()
        peer = self.peer
        if item is None:
            if peer is not None and peer.transport is not None:
                peer.transport.loseConnection()
        elif peer is None:
            self.early.append(item)
        elif peer.transport is not None:
            peer.transport.write(item)


class _Relay(protocol.Factory):
    def __init__(self, target: tuple[str, int], delay: float, loss: float, stall: float) -> None:
        self.target = target
        self.delay = delay
        self.loss = loss
        self.stall = stall

    def buildProtocol(self, addr: Any) -> _Side:
        inbound = _Side(self)

        def connected(outbound: _Side) -> None:
            inbound.peer, outbound.peer = outbound, inbound
            for data in inbound.early:
                outbound.transport.write(data)
            inbound.early.clear()

        def failed(_: Any) -> None:
            if inbound.transport is not None:
                inbound.transport.loseConnection()

        connectProtocol(TCP4ClientEndpoint(reactor, *self.target), _Side(self)).addCallbacks(connected, failed)
        return inbound


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.impair", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--to", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay", type=float, default=0.2, help="one-way latency, seconds")
    parser.add_argument("--loss", type=float, default=0.05, help="fraction of chunks that stall")
    parser.add_argument("--stall", type=float, default=0.3, help="seconds a 'lost' chunk stalls")
    arguments = parser.parse_args(argv)
    host, port = _address(arguments.listen)
    relay = _Relay(_address(arguments.to), arguments.delay, arguments.loss, arguments.stall)
    TCP4ServerEndpoint(reactor, port, interface=host).listen(relay).addErrback(
        lambda f: (sys.stderr.write(f"cannot listen on {arguments.listen}: {f.getErrorMessage()}\n"), reactor.stop())
    )
    reactor.run()


if __name__ == "__main__":
    main()
