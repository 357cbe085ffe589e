"""
AMP whose boxes travel sealed: the base protocol of every cluster connection.

Until the key proof of the handshake succeeds, only the handshake commands
may cross, in clear (inside TLS).  From then on every box, in both directions,
is serialised, sealed by L{wazuhcluster.protocol.sealing} and sent as the one
value of an outer box.  Sealing the whole box, not single values, means the
command names, ask tags and errors are sealed too, and every message carries
a sequence number.  The price is one rule that all commands follow: a whole
box, once serialised, fits in one AMP value (L{MAX_MESSAGE} bytes).

Before the key proof a peer is a stranger, and may send only the
handshake's own small boxes: values of at most L{PREAUTH_MAX_VALUE} bytes
and boxes of at most L{PREAUTH_MAX_KEYS} keys, so that a connection that
never proves the key holds a few KiB, not AMP's 4 MiB.  What a stranger can
make happen again and again is logged through a L{LogThrottle}, one line per
peer address and kind of event a minute; and nothing a peer sends is logged
with a traceback.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure

from ..logs import LogThrottle
from .sealing import SEAL_OVERHEAD, Opener, Sealer, SealingError

#: The largest serialised box a sealed message can carry.
MAX_MESSAGE = 0xFFFF - SEAL_OVERHEAD

#: The key of the one value of an outer, sealed box.
SEALED_KEY = b"s"

#: Most keys a box may have: ours have a handful.  Bounds what a peer can
#: make us hold before a box is complete.
MAX_KEYS_PER_BOX = 64

#: Longest value a peer may send before the key proof.  The handshake's own
#: values are a 32-byte nonce or proof, a command name, an ask tag, and the
#: short reason of a refusal.
PREAUTH_MAX_VALUE = 512

#: Most keys of a box before the key proof: a command, its ask tag and one
#: argument; or an error's tag, code and description.
PREAUTH_MAX_KEYS = 6

#: Shared by the connections of a process unless their factory gives one.
_THROTTLE = LogThrottle()

_LENGTH = struct.Struct("!H")


class ProtocolViolation(Exception):
    """The peer broke the protocol; the connection is dropped."""


#: The error code of an answer to a command whose arguments could not be read.
BAD_ARGUMENTS = b"BAD_ARGUMENTS"


def _argumentProblem(command: type[amp.Command], error: BaseException) -> str:
    """What was wrong with the arguments of C{command}, in a few words."""
    if isinstance(error, KeyError):
        key = error.args[0] if error.args else b"?"
        name = key.decode("ascii", "replace") if isinstance(key, bytes) else str(key)
        return f"its {command.__name__} lacks the argument {name[:64]!r}"
    return f"its {command.__name__} has an unreadable argument ({type(error).__name__}: {str(error)[:120]})"


def decodeBox(data: bytes) -> amp.AmpBox:
    """
    Decode exactly one serialised AMP box, strictly: no trailing bytes, no
    duplicate keys, no more than L{MAX_KEYS_PER_BOX} keys.
    """
    box = amp.AmpBox()
    offset, end = 0, len(data)
    while True:
        if offset + 2 > end:
            raise ProtocolViolation("sealed box is truncated")
        (keyLength,) = _LENGTH.unpack_from(data, offset)
        offset += 2
        if keyLength == 0:
            break
        if keyLength > 255:
            raise ProtocolViolation("sealed box has a key longer than 255 bytes")
        key = data[offset : offset + keyLength]
        offset += keyLength
        if len(key) != keyLength or offset + 2 > end:
            raise ProtocolViolation("sealed box is truncated")
        (valueLength,) = _LENGTH.unpack_from(data, offset)
        offset += 2
        value = data[offset : offset + valueLength]
        offset += valueLength
        if len(value) != valueLength:
            raise ProtocolViolation("sealed box is truncated")
        if key in box:
            raise ProtocolViolation("sealed box repeats a key")
        if len(box) >= MAX_KEYS_PER_BOX:
            raise ProtocolViolation("sealed box has too many keys")
        box[key] = value
    if offset != end:
        raise ProtocolViolation("sealed box is followed by stray bytes")
    return box


def _template(why: str) -> str:
    """
    A reason without what the peer chose in it (names in quotes, numbers,
    details in brackets): the throttle's kind of event, so that one peer
    cannot make each of its lines a kind of its own.
    """
    return re.split(r"['\"(0-9]", why, maxsplit=1)[0][:60]


def describePeer(address: IAddress | None) -> str:
    """C{host:port} of a peer, for log lines."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class SealedAMP(amp.AMP):
    """
    An AMP connection that refuses everything but L{unsealedCommands} until
    L{startSealing}, and everything unsealed afterwards.
    """

    #: Names of the commands a peer may send before sealing starts.
    unsealedCommands: Iterable[bytes] = ()

    log = Logger()
    logTag = "[Cluster]"
    #: Where repeated lines about peers are counted (per process by default).
    logThrottle: LogThrottle = _THROTTLE
    _sealer: Sealer | None = None
    _opener: Opener | None = None
    _pendingSealing: tuple[Sealer, Opener] | None = None
    _dropped = False

    @property
    def sealed(self) -> bool:
        """Whether this connection's boxes are sealed yet."""
        return self._sealer is not None

    def peerDescription(self) -> str:
        """How the log names the other end of this connection."""
        return describePeer(self.transport.getPeer() if self.transport else None)

    def startSealing(self, sealer: Sealer, opener: Opener) -> None:
        """Seal everything from now on, both ways."""
        self._sealer, self._opener = sealer, opener

    def startSealingAfterAnswer(self, sealer: Sealer, opener: Opener) -> None:
        """
        Seal everything after the next answer this side sends: the answer to
        the key proof travels in clear, since the peer cannot open anything
        before it has read it.
        """
        self._pendingSealing = (sealer, opener)

    def sendBox(self, box: amp.AmpBox) -> None:
        if self._sealer is None:
            super().sendBox(box)
            if self._pendingSealing is not None and amp.ANSWER in box:
                self.startSealing(*self._pendingSealing)
                self._pendingSealing = None
            return
        inner = box.serialize()
        if len(inner) > MAX_MESSAGE:
            raise amp.TooLong(False, False, b"<sealed box>", len(inner))
        super().sendBox(amp.AmpBox({SEALED_KEY: self._sealer.seal(inner)}))

    def dataReceived(self, data: bytes) -> None:
        # After dropping a peer, what it already sent is not read.
        if not self._dropped:
            super().dataReceived(data)

    def peerHost(self) -> str:
        """The peer's address without the port: what a stranger is known by."""
        peer = self.transport.getPeer() if self.transport else None
        return str(getattr(peer, "host", peer))

    def lengthLimitExceeded(self, length: int) -> None:
        # AMP closes the connection itself; say who and why.
        if self.sealed:
            self.dropPeer(f"sent a key or value of {length} bytes, over AMP's limit")
        elif self.state == "value":
            self.dropPeer(
                f"sent a value of {length} bytes before proving the cluster key"
                f" (at most {PREAUTH_MAX_VALUE} until then)"
            )
        else:
            self.dropPeer(f"sent a key of {length} bytes before proving the cluster key (at most 255)")

    def proto_key(self, string: bytes) -> str:
        state = super().proto_key(string)
        if state == "value" and not self.sealed:
            # Until the key proof, values are the handshake's small ones.
            self.MAX_LENGTH = PREAUTH_MAX_VALUE
        return state

    def proto_value(self, string: bytes) -> str:
        # Bound what a peer can make us buffer before a box is complete.
        most = MAX_KEYS_PER_BOX if self.sealed else PREAUTH_MAX_KEYS
        if self._currentBox is not None and len(self._currentBox) >= most:
            self.dropPeer("sent a box with too many keys")
            return "key"
        return super().proto_value(string)

    def locateResponder(self, name: bytes) -> Any:
        # AMP answers StartTLS itself: TLS inside the sealed link is not ours.
        if name == amp.StartTLS.commandName:
            return None
        return super().locateResponder(name)

    def _wrapWithSerialization(self, aCallable: Any, command: type[amp.Command]) -> Any:
        # AMP logs a CRITICAL traceback when a box's arguments cannot be
        # parsed, or a responder fails in a way its command does not
        # declare: both are in a peer's hands.  Answer them with an error,
        # and log one line naming the peer.
        doit = super()._wrapWithSerialization(aCallable, command)

        def guarded(box: amp.AmpBox) -> Deferred[Any]:
            try:
                # The arguments are parsed before anything runs; what fails
                # later comes back as a failed Deferred.
                d = doit(box)
            except Exception as e:
                return self._badArguments(command, _argumentProblem(command, e))
            return d.addErrback(self._unexpectedFailure, command)

        return guarded

    def _badArguments(self, command: type[amp.Command], problem: str) -> Deferred[Any]:
        if not self.sealed:
            self.dropPeer(problem)
            return Deferred()
        self.logThrottle.emit(
            self.log, LogLevel.warn, self.peerHost(), "bad-arguments",
            "Refused a command from {peer}: {problem}.", peer=self.peerName(), problem=problem,
        )
        raise amp.RemoteAmpError(BAD_ARGUMENTS, problem)

    def _unexpectedFailure(self, failure: Failure, command: type[amp.Command]) -> Failure:
        if failure.check(amp.RemoteAmpError):
            return failure
        self.logThrottle.emit(
            self.log, LogLevel.error, self.peerHost(), "unexpected-" + command.__name__,
            "Could not answer {command} from {peer}: {error}: {why}; the connection is closed.",
            command=command.__name__, peer=self.peerName(), error=failure.type.__name__,
            why=failure.getErrorMessage()[:300],
        )
        self.log.debug("{command} failed with {traceback}", command=command.__name__,
                       traceback=failure.getTraceback())
        return Failure(amp.RemoteAmpError(amp.UNKNOWN_ERROR_CODE, "Unknown Error", fatal=True))

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if self._dropped:
            return
        try:
            box = self._unsealed(box)
        except (SealingError, ProtocolViolation) as e:
            self.dropPeer(str(e))
            return
        command = box.get(amp.COMMAND)
        if command is not None and self.locateResponder(command) is None:
            # AMP answers UNHANDLED; the log says who tried what.
            self.logThrottle.emit(
                self.log, LogLevel.warn, self.peerHost(), "unknown-command",
                "{peer} sent an unknown command {command!r}.",
                peer=self.peerName(), command=command[:64].decode("ascii", "replace"),
            )
        for key in (amp.ANSWER, amp.ERROR):
            tag = box.get(key)
            if tag is not None and tag not in self._outstandingRequests:
                # AMP itself would raise KeyError out of dataReceived.
                self.dropPeer("answered a question it was never asked")
                return
        try:
            super().ampBoxReceived(box)
        except amp.NoEmptyBoxes:
            self.dropPeer("sent a box that is neither a command nor an answer")

    def _unsealed(self, box: amp.AmpBox) -> amp.AmpBox:
        if self._opener is None:
            if SEALED_KEY in box:
                raise ProtocolViolation("sent a sealed message before the key proof")
            command = box.get(amp.COMMAND)
            if command is not None and command not in self.unsealedCommands:
                raise ProtocolViolation(
                    f"sent {command.decode('ascii', 'replace')!r} before proving the cluster key"
                )
            return box
        if list(box) != [SEALED_KEY]:
            raise ProtocolViolation("sent an unsealed message after the key proof")
        return decodeBox(self._opener.open(box[SEALED_KEY]))

    def dropPeer(self, why: str) -> None:
        """
        Log why the peer is dropped, naming it, and drop it at once.  A peer
        that has not proved the key is a stranger who can come back at once:
        a WARNING, at most one a minute per address and reason.
        """
        if self._dropped:
            return
        self._dropped = True
        if self.sealed:
            self.log.error(
                "Dropping connection with {peer}: {why}.", peer=self.peerName(), why=why
            )
        else:
            self.logThrottle.emit(
                self.log, LogLevel.warn, self.peerHost(), "drop " + _template(why),
                "Dropping connection with {peer}: {why}.", peer=self.peerName(), why=why,
            )
        if self.transport is not None:
            self.transport.abortConnection()

    def peerName(self) -> str:
        """The peer's node name when known, else its address."""
        return self.peerDescription()
