"""
Who may use the API: HTTP Basic credentials checked once the headers of a
request are in, before its body is read.

A password costs a slow C{scrypt} (tens of milliseconds).  Three things keep
that cost from being a weapon:

  - Verification runs on a thread pool of its own (C{authentication_pool_size}
    threads), never on the reactor's shared pool, so that a flood of guesses
    waits behind itself and not in front of file syncing.
  - A verified C{user:password} is trusted for C{auth_cache_time} seconds.
    The cache is keyed by an HMAC of the pair under a random key made at
    start, so it never holds a password or anything a password can be
    tested against offline; it is emptied whenever the users file changes
    (a password changed or a user removed counts at once).
  - Failed verifications are counted per client address: after
    C{max_login_attempts} in a period of C{block_time} seconds from the
    first, that address is refused (429, error 6000) without any
    verification until the period ends.  Each failure is one log line (at
    most C{max_login_attempts} per address and period) and the block one
    more.

Requests without credentials, or with credentials that are not Basic,
UTF-8, C{user:password}, are refused at once (401) and cost nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .settings import ApiLimits
from .users import MAX_PASSWORD_LENGTH, ApiUsers, ApiUsersError

#: Most verified pairs remembered (the oldest are forgotten first).
MAX_CACHED = 4096

#: Most client addresses whose failures are counted at once; past that,
#: the periods that ended are forgotten, then the oldest.
MAX_TRACKED_ADDRESSES = 65536


class Refusal(Exception):
    """A request the API will not serve: its HTTP status, error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


#: The error codes of the HTTP layer (docs/api.md, "Errors before routing").
INVALID_CREDENTIALS = 6100
LOGIN_ATTEMPTS = 6000
#: As the router's own check of a body's size (3.x's "Invalid request").
BODY_TOO_LARGE = 614
REQUEST_TIMEOUT = 6101


def unauthorized(why: str) -> Refusal:
    """
    The one 401 answer, whatever C{why} (kept for the reader of the code):
    it never tells whether the user exists or the users file is damaged.
    """
    return Refusal(401, INVALID_CREDENTIALS, "Invalid credentials")


class _Window:
    """The failed logins of one address since the first of its period."""

    __slots__ = ("start", "count")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0


class Authenticator:
    """
    Checks the C{Authorization} header of requests (see the module's
    docstring).  L{start} and L{stop} its thread pool with the API's
    service; tests pass C{runInThread} instead.
    """

    log = Logger()
    logTag = "[API]"

    def __init__(
        self,
        users: ApiUsers,
        limits: ApiLimits,
        reactor: Any,
        runInThread: Callable[..., Deferred] | None = None,
    ) -> None:
        self.users = users
        self.limits = limits
        self.clock: IReactorTime = reactor
        self._reactor: IReactorThreads = reactor
        self._pool: ThreadPool | None = None
        self._runInThread = runInThread
        self._key = os.urandom(32)
        self._cache: dict[bytes, tuple[str, float]] = {}
        self._cacheFor: tuple[int, int, int] | None = None
        self._pending: dict[bytes, list[tuple[str, Deferred]]] = {}
        self._failures: dict[str, _Window] = {}

    def start(self) -> None:
        if self._runInThread is None and self._pool is None:
            self._pool = ThreadPool(0, self.limits.authentication_pool_size, name="api-authentication")
            self._pool.start()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def _inThread(self, f: Callable[..., Any], *args: Any) -> Deferred:
        if self._runInThread is not None:
            return self._runInThread(f, *args)
        self.start()
        assert self._pool is not None
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def blocked(self, address: str) -> bool:
        """Whether logins from C{address} are refused for now."""
        window = self._failures.get(address)
        if window is None:
            return False
        if self.clock.seconds() >= window.start + self.limits.block_time:
            del self._failures[address]
            return False
        return window.count >= self.limits.max_login_attempts

    def authenticate(self, address: str, authorization: bytes | None) -> Deferred:
        """
        Fires with the user name of the credentials in C{authorization}
        (the header's value), or fails with a L{Refusal}.  Fires at once
        unless a password has to be verified.
        """
        if self.blocked(address):
            return fail(Refusal(
                429, LOGIN_ATTEMPTS,
                "Limit of login attempts reached. The current IP has been blocked due to a "
                "high number of login attempts",
            ))
        try:
            name, password = _basic(authorization)
        except Refusal as refusal:
            return fail(refusal)
        key = hmac.new(self._key, name.encode("utf-8") + b"\0" + password.encode("utf-8"), hashlib.sha256).digest()
        now = self.clock.seconds()
        if self._usersFileChanged():
            self._cache.clear()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return succeed(cached[0])
        # Identical pairs in flight share one verification.
        waiters = self._pending.get(key)
        mine: Deferred = Deferred()
        if waiters is not None:
            waiters.append((address, mine))
            return mine
        self._pending[key] = [(address, mine)]
        self._verify(key, name, password)
        return mine

    def _verify(self, key: bytes, name: str, password: str) -> None:
        d = self._inThread(self.users.verify, name, password)
        wrong: list[bool] = []

        def verified(valid: bool) -> str:
            if not valid:
                wrong.append(True)
                raise unauthorized("wrong user name or password")
            if self.limits.auth_cache_time > 0:
                while len(self._cache) >= MAX_CACHED:
                    del self._cache[next(iter(self._cache))]
                self._cache[key] = (name, self.clock.seconds() + self.limits.auth_cache_time)
            return name

        def broken(reason: Failure) -> Failure:
            if reason.check(Refusal):
                return reason
            if reason.check(ApiUsersError):
                self.log.error("Refused the API login of {user!r}: {problem}", user=name, problem=str(reason.value))
            else:
                self.log.failure("Refused the API login of {user!r}: checking it failed", reason, user=name)
            return Failure(unauthorized("the users file cannot be used"))

        def tell(outcome: Any) -> None:
            for address, waiter in self._pending.pop(key, []):
                if wrong:
                    self._failed(address, name)  # every attempt counts, shared or not
                if isinstance(outcome, Failure):
                    waiter.errback(outcome)
                else:
                    waiter.callback(outcome)

        d.addCallbacks(verified)
        d.addErrback(broken)
        d.addBoth(tell)

    def _failed(self, address: str, name: str) -> None:
        now = self.clock.seconds()
        self.blocked(address)  # ends a period that is over
        window = self._failures.get(address)
        if window is None:
            self._forgetSome(now)
            window = self._failures[address] = _Window(now)
        window.count += 1
        limit = self.limits.max_login_attempts
        if window.count <= limit:
            self.log.warn(
                "API login failed from {address} as {user!r} ({count} of {limit} in {period:.0f} s).",
                address=address, user=name[:64], count=window.count, limit=limit, period=self.limits.block_time,
            )
        if window.count == limit:
            self.log.warn(
                "API logins from {address} refused for {left:.0f} s: {limit} failed in {period:.0f} s "
                "(access.max_login_attempts, access.block_time).",
                address=address, left=window.start + self.limits.block_time - now, limit=limit,
                period=self.limits.block_time,
            )

    def _forgetSome(self, now: float) -> None:
        if len(self._failures) < MAX_TRACKED_ADDRESSES:
            return
        period = self.limits.block_time
        for address in [a for a, w in self._failures.items() if now >= w.start + period]:
            del self._failures[address]
        while len(self._failures) >= MAX_TRACKED_ADDRESSES:
            del self._failures[next(iter(self._failures))]

    def _usersFileChanged(self) -> bool:
        try:
            st = os.stat(self.users.path)
            state = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            state = (0, 0, -1)
        changed = state != self._cacheFor
        self._cacheFor = state
        return changed


def _basic(authorization: bytes | None) -> tuple[str, str]:
    """The user name and password of a Basic C{Authorization} value; L{Refusal} if there are none."""
    if not authorization:
        raise unauthorized("give a user name and password (HTTP Basic authentication)")
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise unauthorized("only HTTP Basic authentication is supported")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise unauthorized("the Basic credentials are not base64 of UTF-8 user:password") from None
    name, colon, password = decoded.partition(":")
    if not colon or not name:
        raise unauthorized("the Basic credentials are not user:password")
    if len(password) > MAX_PASSWORD_LENGTH or len(name) > 256:
        raise unauthorized("wrong user name or password")
    return name, password
