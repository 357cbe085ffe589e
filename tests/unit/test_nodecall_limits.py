"""
What a worker holding the key may ask of the master through node calls
(over real in-memory TLS): reads both ways, changes only from the master;
and the share of API blobs each connection may leave unclaimed.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import MasterHarness, MemoryNetwork, settings
from tests.unit.test_api import inline
from wazuhcluster.api import nodecalls
from wazuhcluster.api.envelope import ApiError
from wazuhcluster.api.guard import ThrottledLog
from wazuhcluster.api.localnode import LocalNode
from wazuhcluster.api.nodecalls import (
    BLOB_LIFETIME,
    MAX_BLOBS,
    MAX_UNCLAIMED_BYTES,
    WRONG_DIRECTION,
    BlobStore,
    NodeCall,
    NodeCallFailed,
    NodeCalls,
    _BlobSink,
)
from wazuhcluster.home import WazuhHome
from wazuhcluster.protocol.stream import chunksOf
from wazuhcluster.stats import NodeStats
from wazuhcluster.worker.connection import MasterConnectionFactory


class DirectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.masterHome = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(self.masterHome.path("etc", "rules"))
        workerHome = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(workerHome.path("etc", "rules"))
        self.restarts: list[str] = []
        masterNode = LocalNode(self.masterHome, "master-node", "wazuh", "master", "4.9.0", NodeStats(), ["true"], inline)
        masterNode.restart = lambda: self.restarts.append("master") or {}  # type: ignore[method-assign]
        workerNode = LocalNode(workerHome, "node02", "wazuh", "worker", "4.9.0", NodeStats(), ["true"], inline)
        self.events: list[dict[str, Any]] = []
        self.patch(NodeCalls, "log", Logger(observer=self.events.append))
        self.patch(ThrottledLog, "log", Logger(observer=self.events.append))
        self.masterCalls = NodeCalls(masterNode, self.clock, lambda name: self.master.fleet.workers[name], isMaster=True)
        self.master.factory.nodeCalls = self.masterCalls
        self.master.factory.sinksFor = self.masterCalls.sinksFor
        self.workerCalls = NodeCalls(workerNode, self.clock, lambda name: self.link.client, isMaster=False)
        original = MasterConnectionFactory.buildProtocol
        calls = self.workerCalls

        def build(factory: Any, addr: Any) -> Any:
            factory.nodeCalls = calls
            return original(factory, addr)

        self.patch(MasterConnectionFactory, "buildProtocol", build)
        self.link, joined = self.net.joinWorker(self.master, settings("node02"), sinksFor=calls.sinksFor)
        self.successResultOf(joined)

    def pump(self, d: Deferred) -> Deferred:
        for _ in range(30):
            self.net.flush()
            self.clock.advance(0)
        return d

    def hostile(self, operation: str, body: bytes = b"", **arguments: Any) -> Any:
        """A worker that skips its own check and asks the master directly: how the master refused."""
        d = self.link.client.callRemote(
            NodeCall, node="master-node", operation=operation, arguments=json.dumps(arguments), body=body, body_blob="",
        )
        refused: list[Any] = []
        d.addErrback(refused.append)  # before the answer: AMP drops a link whose errors nobody takes
        self.pump(d)
        self.assertEqual(len(refused), 1, operation)
        return refused[0]

    def test_readsTravelBothWays(self) -> None:
        info = self.successResultOf(self.pump(Deferred.fromCoroutine(self.workerCalls.call("master-node", "info", {}))))
        self.assertEqual(info["node"], "master-node")
        [line] = [formatEvent(e) for e in self.events if "Node call" in formatEvent(e)]
        self.assertEqual(line, "Node call info on master-node from node02.")

    def test_masterRefusesChangesFromWorkers(self) -> None:
        for operation, arguments, body in (
            ("restart", {}, b""),
            ("files.put", {"path": "etc/rules/evil.xml", "overwrite": True}, b"<x/>"),
            ("files.delete", {"path": "etc/rules/local.xml"}, b""),
            ("no-such-operation", {}, b""),
        ):
            failure = self.hostile(operation, body, **arguments)
            failure.trap(NodeCallFailed)
            detail = json.loads(str(failure.value))
            self.assertEqual((detail["code"], detail["status"]), (WRONG_DIRECTION, 403), detail)
        self.assertEqual(self.restarts, [])
        self.assertFalse(os.path.exists(self.masterHome.path("etc", "rules", "evil.xml")))
        # One line a minute per worker: the first refusal; the next line counts the others.
        refused = [formatEvent(e) for e in self.events if "Refused node call" in formatEvent(e)]
        self.assertEqual(refused, ["Refused node call 'restart' on master-node from node02: it may travel master to worker."])
        self.clock.advance(60)
        self.hostile("restart")
        refused = [formatEvent(e) for e in self.events if "Refused node call" in formatEvent(e)]
        self.assertEqual(len(refused), 2)
        self.assertIn("(3 more like it in the last minute)", refused[1])

    def test_workerRefusesToAskChanges(self) -> None:
        """A worker's own API does not even ask: the error says to use the master's API."""
        d = self.pump(Deferred.fromCoroutine(self.workerCalls.call("master-node", "restart", {})))
        error = self.failureResultOf(d, ApiError).value
        self.assertEqual(error.code, WRONG_DIRECTION)
        self.assertIn("use the master's API", error.message)

    def test_masterStillChangesWorkers(self) -> None:
        d = self.pump(Deferred.fromCoroutine(
            self.masterCalls.call("node02", "files.put", {"path": "etc/rules/ok.xml", "overwrite": True}, b"<x/>")
        ))
        self.successResultOf(d)

    def test_unclaimedBlobsCapped(self) -> None:
        """A worker sending blobs no call claims: its share fills, the rest fail, time frees it."""
        outcomes = []
        for i in range(MAX_BLOBS + 3):
            d = Deferred.fromCoroutine(self.link.client.streams.send(
                "api-blob", f"blob{i}", chunksOf(iter([b"x" * 40000])), timeout=30,
            ))
            outcomes.append(self.pump(d))
        kept = len(self.masterCalls.blobs._blobs)
        self.assertEqual(kept, MAX_BLOBS)
        for o in outcomes:
            o.addErrback(lambda _: None)
        self.clock.advance(BLOB_LIFETIME)
        self.assertEqual(self.masterCalls.blobs._blobs, {})
        self.assertEqual(self.masterCalls.blobs._shares, {})
        # The link still works.
        self.test_readsTravelBothWays()


class BlobStoreTests(SynchronousTestCase):
    def test_bytesPerConnection(self) -> None:
        store = BlobStore(Clock())
        a, b = object(), object()
        sink = _BlobSink(store, a, "one")
        sink.feed(b"x" * (MAX_UNCLAIMED_BYTES - 10))
        self.assertRaises(ValueError, _BlobSink(store, a, "two").feed, b"y" * 11)
        _BlobSink(store, b, "three").feed(b"y" * 11)  # another connection has its own share
        sink.close()
        self.assertRaises(ApiError, store.take, "one", b)  # not claimable from another connection
        self.assertEqual(len(store.take("one", a)), MAX_UNCLAIMED_BYTES - 10)
        self.assertEqual(store.held(a), 0)

    def test_streamsPerConnection(self) -> None:
        store = BlobStore(Clock())
        owner = object()
        sinks = [_BlobSink(store, owner, f"s{i}") for i in range(nodecalls.MAX_BLOB_STREAMS + 1)]
        self.assertRaises(ValueError, sinks[-1].feed, b"x")
        sinks[0].abort("gone")
        self.assertIsNone(_BlobSink(store, owner, "again").refused)
