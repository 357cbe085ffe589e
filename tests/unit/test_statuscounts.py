"""
L{StatusCounts}: the agents by status it keeps are those a full listing of
the same files gives, through statuses and time.
"""

from __future__ import annotations

import collections
import os
import random

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents.agentinfo import statusFileName, writeAgentInfo
from wazuhcluster.agents.status import ReportingNodes, listAgents
from wazuhcluster.agents.statuscounts import StatusCounts

KEY = "d" * 64
DISCONNECTION = 600.0
NOW = 1_800_000_000.0


class StatusCountsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.home, "etc"))
        #: 150 agents, and one registered with a network (it never has a status file).
        self.agents = [(f"{i:03d}", f"agent-{i}", f"10.1.0.{i}") for i in range(1, 151)] + [("151", "net", "10.2.0.0/24")]
        with open(os.path.join(self.home, "etc", "client.keys"), "w") as f:
            f.writelines(f"{i} {name} {ip} {KEY}\n" for i, name, ip in self.agents)
        self.nodes = ReportingNodes(os.path.join(self.home, "nodes.json"))

    def listed(self, now: float) -> dict[str, int]:
        records = listAgents(self.home, self.nodes, "master", now, DISCONNECTION)
        counts = dict.fromkeys(("Active", "Disconnected", "Never connected", "Pending"), 0)
        counts.update(collections.Counter(r.status for r in records))
        return counts

    def test_follows_the_listing(self) -> None:
        rng = random.Random(7)
        now = NOW
        for _, name, ip in self.agents[:100]:
            writeAgentInfo(self.home, name, ip, when=now - rng.uniform(0, 2 * DISCONNECTION), pending=rng.random() < 0.1)
        counts = StatusCounts(DISCONNECTION)
        counts.rebuild(listAgents(self.home, self.nodes, "master", now, DISCONNECTION), now)
        self.assertEqual(counts.counts(now), self.listed(now))
        for step in range(60):
            changes = []
            for _ in range(rng.randrange(0, 30)):
                _, name, ip = rng.choice(self.agents[:150])
                when = now - rng.choice((0.0, rng.uniform(0, DISCONNECTION), rng.uniform(DISCONNECTION, 3 * DISCONNECTION)))
                empty = rng.random() < 0.05
                writeAgentInfo(self.home, name, ip, when=when, pending=empty)
                changes.append((statusFileName(name, ip), when, empty))
            counts.update(changes)
            now += rng.choice((0.0, 1.0, 59.0, 301.0))
            self.assertEqual(counts.counts(now), self.listed(now), f"step {step}")
        # One agent updated many times stays one agent.
        _, name, ip = self.agents[0]
        for k in range(3000):
            counts.update([(statusFileName(name, ip), now + k / 1000, False)])
        writeAgentInfo(self.home, name, ip, when=now + 2.999)
        self.assertEqual(counts.counts(now + 3), self.listed(now + 3))
        self.assertEqual(counts.counts(now + 700), self.listed(now + 700))

    def test_invalidated_until_rebuilt(self) -> None:
        counts = StatusCounts(DISCONNECTION)
        self.assertIsNone(counts.builtAt)
        counts.update([("agent-1-10.1.0.1", NOW, False)])  # nothing to move yet
        counts.rebuild(listAgents(self.home, self.nodes, "master", NOW, DISCONNECTION), NOW)
        self.assertEqual(counts.counts(NOW), {"Active": 1, "Disconnected": 0, "Never connected": 151, "Pending": 0})
        counts.invalidate()
        self.assertIsNone(counts.builtAt)
