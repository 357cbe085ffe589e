"""
Registrations forwarded from a worker to the master's registry, in memory.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import MasterHarness, MemoryNetwork, settings
from wazuhcluster.agents.registration import MASTER_UNREACHABLE, ForwardedRegistration, MasterRegistration
from wazuhcluster.agents.registry import AgentRegistry
from wazuhcluster.home import WazuhHome
from wazuhcluster.protocol.agentcommands import RegistryRefused


class ForwardingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(self.home.path("etc"))
        self.master = MasterHarness(self.clock)
        self.master.factory.registration = MasterRegistration(
            AgentRegistry(self.home), runInThread=lambda f, *a: maybeDeferred(f, *a)
        )
        self.connection, joined = self.net.joinWorker(self.master, settings("node02"))
        self.successResultOf(joined)
        self.forwarded = ForwardedRegistration(lambda: self.connection.client)

    def call(self, coroutine) -> Deferred:
        d = Deferred.fromCoroutine(coroutine)
        self.net.flush()
        return d

    def test_registerAndRemoveOnTheMaster(self) -> None:
        answer = self.successResultOf(self.call(self.forwarded.register("web-01", "10.1.2.3", "web", False)))
        self.assertEqual(answer["agent_id"], "001")
        with open(self.home.path("etc", "client.keys")) as f:
            self.assertIn("001 web-01 10.1.2.3 ", f.read())
        with open(self.home.path("queue", "agent-groups", "001")) as f:
            self.assertEqual(f.read(), "web\n")
        removed = self.successResultOf(self.call(self.forwarded.remove("001")))
        self.assertEqual((removed["agent_id"], removed["name"]), ("001", "web-01"))

    def test_refusalTravelsBack(self) -> None:
        self.successResultOf(self.call(self.forwarded.register("web-01", "10.1.2.3", "default", False)))
        failure = self.failureResultOf(
            self.call(self.forwarded.register("web-02", "10.1.2.3", "default", False)), RegistryRefused
        )
        self.assertIn("10.1.2.3", failure.getErrorMessage())

    def test_noMasterConnection(self) -> None:
        alone = ForwardedRegistration(lambda: None)
        failure = self.failureResultOf(
            Deferred.fromCoroutine(alone.register("web-01", "any", "default", False)), RegistryRefused
        )
        self.assertEqual(failure.getErrorMessage(), MASTER_UNREACHABLE)
        self.assertFalse(os.path.exists(self.home.path("etc", "client.keys")))
