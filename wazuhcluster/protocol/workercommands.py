"""
Commands a worker sends to the master.

The first two are the key proof and cross in clear (inside TLS); everything
from L{Hello} on is sealed.
"""

from __future__ import annotations

from twisted.protocols import amp

#: Bytes of each handshake nonce.
NONCE_SIZE = 32


class KeyRefused(Exception):
    """The worker could not prove it holds the cluster key."""


class HelloRefused(Exception):
    """The master will not take this worker; the message says why."""


class Authenticate(amp.Command):
    """
    Open the handshake: the worker's nonce, answered by the master's.
    Sent in clear.
    """

    arguments = [(b"worker_nonce", amp.String())]
    response = [(b"master_nonce", amp.String())]


class ProveKey(amp.Command):
    """
    The worker's proof that it holds the cluster key, bound to both nonces
    and the TLS channel; answered by the master's own proof.  Sent in clear;
    once the answer is out, both sides seal everything.
    """

    arguments = [(b"proof", amp.String())]
    response = [(b"proof", amp.String())]
    errors = {KeyRefused: b"KEY_REFUSED"}


class Hello(amp.Command):
    """A worker introduces itself; the master accepts it or says why not."""

    arguments = [
        (b"cluster_name", amp.Unicode()),
        (b"node_name", amp.Unicode()),
        (b"node_type", amp.Unicode()),
        (b"version", amp.Unicode()),
    ]
    response = [(b"master_name", amp.Unicode())]
    errors = {HelloRefused: b"HELLO_REFUSED"}


class KeepAlive(amp.Command):
    """The worker is alive; the master notes the time."""

    arguments: list = []
    response: list = []
