"""
The API's HTTP layer and its authentication, in memory: a L{GuardedSite}
over a C{StringTransport}, a L{Clock} for every deadline, and a real users
file with a cheap C{scrypt} cost.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from wazuhcluster.api import guard as guardmodule
from wazuhcluster.api.authn import Authenticator
from wazuhcluster.api.guard import HELD_BODY, LINGER, ConnectionLimiter, GuardedSite, ThrottledLog
from wazuhcluster.api.settings import ApiLimits, loadApiSettings
from wazuhcluster.api.users import ApiUsers, ScryptCost
from wazuhcluster.config import ConfigError
from wazuhcluster.home import WazuhHome
from wazuhcluster.metrics.registry import NodeMetrics

CHEAP = ScryptCost(n=16, r=1, p=1)
PASSWORD = "a good password"


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class _Echo(Resource):
    """Answers with the size of the body it got, and records it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        self.bodies.append(body)
        return json.dumps({"got": len(body), "user": request.apiUser}).encode()


class _Threads:
    """C{runInThread}: runs at once, or holds each call until told (C{hold})."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.hold = False
        self.held: list[tuple[Deferred, Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> Deferred:
        self.calls.append(args)
        if not self.hold:
            return maybeDeferred(f, *args)
        d: Deferred = Deferred()
        self.held.append((d, f, args))
        return d

    def release(self) -> None:
        for d, f, args in self.held:
            d.callback(f(*args))
        self.held = []


class GuardTestsMixin:
    limits = ApiLimits(max_upload_size=1024 * 1024, headers_timeout=10, request_timeout=60,
                       max_login_attempts=3, block_time=300, auth_cache_time=30)

    def setUp(self) -> None:
        self.clock = Clock()
        self.path = os.path.join(self.mktemp(), "users.json")
        self.users = ApiUsers(self.path, cost=CHEAP)
        self.users.add("alice", PASSWORD)
        self.threads = _Threads()
        self.events: list[dict[str, Any]] = []
        self.patch(Authenticator, "log", Logger(observer=self.events.append))
        self.patch(ThrottledLog, "log", Logger(observer=self.events.append))
        self.authenticator = Authenticator(self.users, self.limits, self.clock, self.threads)
        self.resource = _Echo()
        self.site = GuardedSite(self.resource, self.authenticator, self.limits, self.clock)

    def connect(self, host: str = "10.0.0.1") -> tuple[Any, StringTransport]:
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        channel = self.site.buildProtocol(transport.getPeer())
        channel.makeConnection(transport)
        return channel, transport

    def status(self, transport: StringTransport) -> tuple[int, dict[str, Any]]:
        raw = transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), json.loads(body) if body.startswith(b"{") else {}

    def lines(self, *needles: str) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if all(n in formatEvent(e) for n in needles)]


class AuthenticationTests(GuardTestsMixin, SynchronousTestCase):
    def request(self, transport: StringTransport, channel: Any, auth: bytes | None, body: bytes = b"",
                length: int | None = None) -> None:
        headers = b"POST /x HTTP/1.1\r\nHost: api\r\n"
        if auth is not None:
            headers += b"Authorization: " + auth + b"\r\n"
        headers += b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length)
        channel.dataReceived(headers + body)

    def test_unauthenticatedHugeBodyRefusedAtOnce(self) -> None:
        """A 1 GiB body without credentials: 401 in JSON at once, nothing of it kept, then closed."""
        channel, transport = self.connect()
        self.request(transport, channel, None, b"x" * 65536, length=2**30)
        self.assertEqual(self.status(transport), (401, {"error": 6100, "message": "Invalid credentials"}))
        self.assertIn(b"WWW-Authenticate: basic realm=\"wazuh\"", transport.value())
        self.assertIsNone(channel.requests[0].content)  # no body file was ever made
        for _ in range(100):
            channel.dataReceived(b"y" * 65536)  # read and thrown away while lingering
        self.assertIsNone(channel.requests[0].content)  # no body file was ever made
        self.assertFalse(transport.disconnecting)
        self.clock.advance(LINGER)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.bodies, [])
        self.assertEqual(self.threads.calls, [])

    def test_wrongPasswordNeverReachesTheResource(self) -> None:
        for auth in (basic("alice", "wrong password"), basic("bob", PASSWORD), b"Bearer x", b"Basic !!", basic("", "x")):
            channel, transport = self.connect(host="10.0.0.%d" % len(auth))
            self.request(transport, channel, auth, b"{}")
            self.assertEqual(self.status(transport), (401, {"error": 6100, "message": "Invalid credentials"}))
        self.assertEqual(self.resource.bodies, [])

    def test_accepted(self) -> None:
        channel, transport = self.connect()
        self.request(transport, channel, basic("alice", PASSWORD), b"hello")
        status, answer = self.status(transport)
        self.assertEqual((status, answer), (200, {"got": 5, "user": "alice"}))

    def test_answersCounted(self) -> None:
        """Each answer is counted by method and status, refusals included, with its duration."""
        metrics = NodeMetrics()
        self.site.metrics = metrics
        channel, transport = self.connect()
        self.request(transport, channel, basic("alice", PASSWORD), b"hello")
        channel, transport = self.connect(host="10.0.0.2")
        channel.dataReceived(b"PUT /x HTTP/1.1\r\nHost: api\r\n")
        self.clock.advance(0.25)
        channel.dataReceived(b"Content-Length: 2\r\n\r\n{}")  # no credentials: 401 at the headers
        channel, transport = self.connect(host="10.0.0.3")
        self.request(transport, channel, basic("alice", "wrong"), b"{}")
        channel, transport = self.connect(host="10.0.0.4")
        channel.dataReceived(b"BREW /x HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\n\r\n")
        counted = {
            (s.labels["method"], s.labels["code"]): s.value
            for s in metrics.apiRequests.collect()[0].samples if s.name.endswith("_total")
        }
        # A method a stranger makes up is "other": it cannot grow the metrics.
        self.assertEqual(counted, {("POST", "200"): 1, ("PUT", "401"): 1, ("POST", "401"): 1, ("other", "401"): 1})
        duration = {s.name: s.value for s in metrics.apiRequestDuration.collect()[0].samples}
        self.assertEqual(duration["wazuhcluster_api_request_duration_seconds_count"], 4)
        self.assertAlmostEqual(duration["wazuhcluster_api_request_duration_seconds_sum"], 0.25)

    def test_tooLargeAfterCredentials(self) -> None:
        """Good credentials and a Content-Length over max_upload_size: 413 before any of the body."""
        channel, transport = self.connect()
        self.request(transport, channel, basic("alice", PASSWORD), b"x" * 1000, length=self.limits.max_upload_size + 1)
        status, answer = self.status(transport)
        self.assertEqual((status, answer["error"]), (413, 614))
        self.assertIn("max_upload_size", answer["message"])
        self.assertEqual(self.resource.bodies, [])
        self.assertEqual(len(self.lines("10.0.0.1", "refused a body over")), 1)

    def test_chunkedBodyCounted(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: api\r\nAuthorization: " + basic("alice", PASSWORD)
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        for _ in range(self.limits.max_upload_size // len(chunk) + 1):
            channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.assertEqual(self.status(transport)[0], 413)
        self.assertLessEqual(channel.requests[0].content.tell(), self.limits.max_upload_size)

    def test_bodyHeldWhileVerifying(self) -> None:
        """While the password is checked, at most HELD_BODY (plus one read) waits, and reading pauses."""
        self.threads.hold = True
        channel, transport = self.connect()
        body = b"z" * (3 * HELD_BODY)
        self.request(transport, channel, basic("alice", PASSWORD), body[:HELD_BODY + 1000], length=len(body))
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.resource.bodies, [])
        self.threads.release()
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(body[HELD_BODY + 1000:])
        self.assertEqual(self.resource.bodies, [body])

    def test_getWaitsForVerification(self) -> None:
        self.threads.hold = True
        channel, transport = self.connect()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nAuthorization: " + basic("alice", PASSWORD) + b"\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        self.threads.release()
        self.assertEqual(self.status(transport), (200, {"got": 0, "user": "alice"}))

    def test_cacheAndItsKeys(self) -> None:
        """One verification for many requests; the cache holds no password; it expires."""
        for _ in range(5):
            self.successResultOf(self.authenticator.authenticate("10.0.0.1", basic("alice", PASSWORD)))
        self.assertEqual(len(self.threads.calls), 1)
        for key, (name, _) in self.authenticator._cache.items():
            self.assertEqual(len(key), 32)
            self.assertNotIn(PASSWORD.encode(), key)
            self.assertEqual(name, "alice")
        self.clock.advance(self.limits.auth_cache_time + 1)
        self.successResultOf(self.authenticator.authenticate("10.0.0.1", basic("alice", PASSWORD)))
        self.assertEqual(len(self.threads.calls), 2)

    def test_passwordChangeEmptiesTheCache(self) -> None:
        self.successResultOf(self.authenticator.authenticate("10.0.0.1", basic("alice", PASSWORD)))
        self.users.setPassword("alice", "another password")
        self.failureResultOf(self.authenticator.authenticate("10.0.0.1", basic("alice", PASSWORD)))

    def test_concurrentVerificationsShared(self) -> None:
        self.threads.hold = True
        waiting = [self.authenticator.authenticate("10.0.0.1", basic("alice", PASSWORD)) for _ in range(10)]
        self.threads.release()
        self.assertEqual([self.successResultOf(d) for d in waiting], ["alice"] * 10)
        self.assertEqual(len(self.threads.calls), 1)

    def test_sharedFailuresCountForEachAddress(self) -> None:
        """Guesses that share one verification still count against each address that sent them."""
        self.threads.hold = True
        waiting = [self.authenticator.authenticate(f"10.0.1.{i}", basic("alice", "nope")) for i in range(3)]
        self.threads.release()
        for d in waiting:
            self.failureResultOf(d)
        self.assertEqual(len(self.threads.calls), 1)
        self.assertEqual(sorted(self.authenticator._failures), ["10.0.1.0", "10.0.1.1", "10.0.1.2"])

    def test_failedLoginsThrottledPerAddress(self) -> None:
        """After max_login_attempts failures: 429 without verifying, until block_time has passed."""
        for _ in range(self.limits.max_login_attempts):
            self.failureResultOf(self.authenticator.authenticate("10.0.0.9", basic("alice", "nope")))
        verified = len(self.threads.calls)
        refusal = self.failureResultOf(self.authenticator.authenticate("10.0.0.9", basic("alice", PASSWORD))).value
        self.assertEqual((refusal.status, refusal.code), (429, 6000))
        self.assertEqual(len(self.threads.calls), verified)
        # Another address is not blocked.
        self.successResultOf(self.authenticator.authenticate("10.0.0.8", basic("alice", PASSWORD)))
        self.assertEqual(len(self.lines("10.0.0.9", "refused for")), 1)
        self.assertEqual(len(self.lines("10.0.0.9", "login failed")), self.limits.max_login_attempts)
        self.clock.advance(self.limits.block_time)
        self.successResultOf(self.authenticator.authenticate("10.0.0.9", basic("alice", PASSWORD)))

    def test_blockedOverHttp(self) -> None:
        for _ in range(self.limits.max_login_attempts):
            channel, transport = self.connect()
            self.request(transport, channel, basic("alice", "wrong"), b"")
        channel, transport = self.connect()
        self.request(transport, channel, basic("alice", PASSWORD), b"")
        status, answer = self.status(transport)
        self.assertEqual((status, answer["error"]), (429, 6000))

    def test_damagedUsersFile(self) -> None:
        with open(self.path, "w") as f:
            f.write("not json")
        refusal = self.failureResultOf(self.authenticator.authenticate("10.0.0.1", basic("alice", PASSWORD))).value
        self.assertEqual(refusal.status, 401)
        self.assertEqual(len(self.lines("is damaged")), 1)


class DeadlineTests(GuardTestsMixin, SynchronousTestCase):
    def test_slowHeaders(self) -> None:
        """One header line every few seconds: 408 once headers_timeout has passed since the first byte."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        for i in range(4):
            self.clock.advance(2)
            channel.dataReceived(b"X-Slow-%d: 1\r\n" % i)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertEqual(self.status(transport)[0], 408)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.lines("10.0.0.1", "headers_timeout")), 1)

    def test_slowBody(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nAuthorization: " + basic("alice", PASSWORD) + b"\r\nContent-Length: 1000\r\n\r\n"
        )
        for _ in range(59):
            self.clock.advance(1)
            channel.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        status, answer = self.status(transport)
        self.assertEqual((status, answer["error"]), (408, 6101))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.bodies, [])

    def test_idleKeepAliveClosedQuietly(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nAuthorization: " + basic("alice", PASSWORD) + b"\r\n\r\n")
        self.assertEqual(self.status(transport)[0], 200)
        transport.clear()
        self.clock.advance(self.limits.headers_timeout)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_idleNewConnectionClosed(self) -> None:
        channel, transport = self.connect()
        self.clock.advance(self.limits.headers_timeout)
        self.assertTrue(transport.disconnecting)
        transport.disconnecting = False
        self.clock.advance(guardmodule.CLOSE_GRACE)
        self.assertTrue(transport.disconnecting)


class ConnectionLimiterTests(SynchronousTestCase):
    def test_caps(self) -> None:
        clock = Clock()
        events: list[dict[str, Any]] = []
        self.patch(ThrottledLog, "log", Logger(observer=events.append))
        from twisted.internet.protocol import Factory, Protocol

        limiter = ConnectionLimiter(Factory.forProtocol(Protocol), 3, 2, ThrottledLog(clock))
        opened = []
        for host in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
            address = IPv4Address("TCP", host, 1)
            p = limiter.buildProtocol(address)
            if p is not None:
                p.makeConnection(StringTransport(peerAddress=address))
            opened.append(p is not None)
        self.assertEqual(opened, [True, True, False, True, False, False])
        self.assertEqual(len(events), 3)  # one line per address and minute
        first = next(iter(limiter.protocols))
        first.connectionLost(None)
        self.assertEqual(limiter.total, 2)
        self.assertIsNotNone(limiter.buildProtocol(IPv4Address("TCP", "10.0.0.4", 1)))

    def test_descriptorShare(self) -> None:
        import resource

        self.patch(resource, "getrlimit", lambda which: (1024, 4096))
        self.assertEqual(guardmodule.effectiveMaxConnections(ApiLimits(max_connections=256)), 128)
        self.patch(resource, "getrlimit", lambda which: (65536, 65536))
        self.assertEqual(guardmodule.effectiveMaxConnections(ApiLimits(max_connections=256)), 256)


class LimitSettingsTests(SynchronousTestCase):
    def home(self, text: str) -> WazuhHome:
        root = self.mktemp()
        os.makedirs(os.path.join(root, "api", "configuration"))
        with open(os.path.join(root, "api", "configuration", "api.yaml"), "w") as f:
            f.write(text)
        return WazuhHome(os.path.abspath(root))

    def test_setAndDefaults(self) -> None:
        settings = loadApiSettings(self.home(
            "max_upload_size: 2048\nintervals:\n  headers_timeout: 5\naccess:\n  max_connections: 10\n"
            "  auth_cache_time: 0\n"
        ), True)
        self.assertEqual(settings.limits, ApiLimits(max_upload_size=2048, headers_timeout=5, max_connections=10,
                                                    auth_cache_time=0))

    def test_problems(self) -> None:
        for text, setting in (
            ("max_upload_size: 10\n", "max_upload_size"),
            ("intervals:\n  headers_timeout: soon\n", "intervals.headers_timeout"),
            ("access:\n  max_connections: 2.5\n", "access.max_connections"),
            ("access:\n  max_logins: 3\n", "access.max_logins"),
            ("access: [1]\n", "access"),
        ):
            message = str(self.assertRaises(ConfigError, loadApiSettings, self.home(text), True))
            self.assertIn(f": {setting}: ", message)
