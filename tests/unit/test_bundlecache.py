"""
The master's bundle cache: a bundle built once, in steps, and streamed to
its readers while it is built.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.master import bundlecache
from wazuhcluster.master.bundlecache import BundleCache


class Threads:
    """A stand-in for deferToThread that runs each call when the test says."""

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((d, f, args))
        return d

    def runOne(self) -> None:
        d, f, args = self.pending.pop(0)
        try:
            result = f(*args)
        except BaseException as e:
            d.errback(e)
        else:
            d.callback(result)

    def runAll(self) -> None:
        while self.pending:
            self.runOne()


class BundleCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        self.names = tuple(f"etc/lists/f{i:03d}" for i in range(40))
        for name in self.names:
            os.makedirs(os.path.dirname(os.path.join(self.home, name)), exist_ok=True)
            with open(os.path.join(self.home, name), "wb") as f:
                f.write(os.urandom(2000))
        self.threads = Threads()
        self.cache = BundleCache(os.path.join(self.home, "queue", "cluster"), self.threads)
        # Small steps: the build takes many, and readers see it grow.
        self.patch(bundlecache, "_BUILD_STEP", 8 * 1024)

    def path(self, relpath: str) -> str:
        return os.path.join(self.home, relpath)

    def readAll(self, reading: Any, between: Callable[[], None]) -> bytes:
        """Every chunk of C{reading}, running C{between} while one is awaited."""
        data = b""
        while True:
            d = Deferred.fromCoroutine(reading.next())
            while not d.called:
                between()
            chunk = self.successResultOf(d)
            if chunk is None:
                return data
            data += chunk

    def test_streamedWhileBuilt(self) -> None:
        """
        The first reader gets chunks before the build ends; a later reader
        gets the same bytes from the file; the bundle is built once and is
        a complete, valid bundle.
        """
        bundle = self.successResultOf(self.cache.bundle(1, self.names, ("etc/lists/gone",), self.path))
        reading = bundle.reading(self.threads)
        first = Deferred.fromCoroutine(reading.next())
        while not first.called:
            self.threads.runOne()
        self.assertFalse(bundle.done)
        data = self.successResultOf(first) + self.readAll(reading, self.threads.runOne)
        self.assertTrue(bundle.done)
        self.assertEqual(len(data), bundle.length)
        self.assertEqual(bundle.sent, self.names)
        self.assertEqual(bundle.bytesOut, len(data))
        again = self.successResultOf(self.cache.bundle(1, self.names, ("etc/lists/gone",), self.path))
        self.assertIs(again, bundle)
        self.assertEqual(self.readAll(again.reading(self.threads), self.threads.runOne), data)
        self.assertEqual(b"".join(bundle.chunks()), data)
        self.assertEqual(self.cache.built, 1)
        self.assertTrue(zlib.decompress(data).endswith(b"E" + (40).to_bytes(4, "big") + (1).to_bytes(4, "big")))
        self.assertEqual(os.listdir(self.path("queue/cluster")), [])

    def test_readersTogether(self) -> None:
        """Two readers waiting on the same build both get the whole bundle."""
        bundle = self.successResultOf(self.cache.bundle(1, self.names, (), self.path))
        one, two = bundle.reading(self.threads), bundle.reading(self.threads)
        first = [Deferred.fromCoroutine(r.next()) for r in (one, two)]
        self.threads.runAll()
        data = [self.successResultOf(d) for d in first]
        data[0] += self.readAll(one, self.threads.runAll)
        data[1] += self.readAll(two, self.threads.runAll)
        self.assertEqual(data[0], data[1])
        self.assertEqual(b"".join(bundle.chunks()), data[0])

    def test_buildFails(self) -> None:
        """A build that fails fails its readers, and the next asker gets a new build."""
        with open(self.path("queue"), "wb"):
            pass
        bundle = self.successResultOf(self.cache.bundle(1, self.names, (), self.path))
        d = Deferred.fromCoroutine(bundle.reading(self.threads).next())
        self.threads.runAll()
        self.failureResultOf(d, OSError)
        os.unlink(self.path("queue"))
        again = self.successResultOf(self.cache.bundle(1, self.names, (), self.path))
        self.assertIsNot(again, bundle)
        self.assertTrue(self.readAll(again.reading(self.threads), self.threads.runAll))
        self.assertEqual(self.cache.built, 2)
