"""
Agent info: statuses from the workers to the master over real (in-memory)
TLS, the master's checks, and what it then knows of every agent.
"""

from __future__ import annotations

import json
import os

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import FAST, MasterHarness, MemoryNetwork, settings
from tests.unit.test_handshake import LogCapture
from wazuhcluster.agents.agentinfo import (
    keepAliveText,
    parseStatusFileName,
    statusFileName,
    versionIn,
    writeAgentInfo,
)
from wazuhcluster.agents.registry import AgentRegistry
from wazuhcluster.agents.clientkeys import AgentKey
from wazuhcluster.agents.status import AgentState, RegisteredAgent, RegisteredAgents, ReportingNodes
from wazuhcluster.agents import status as statusModule
from wazuhcluster.home import WazuhHome
from wazuhcluster.internal_options import InternalOptions
from wazuhcluster.protocol.agentcommands import ListAgents, RegistryRefused
from wazuhcluster.protocol.stream import StreamFailed, StreamRefused, chunksOf
from wazuhcluster.sync.bundle import BundleWriter
from wazuhcluster.master.agentinfo import MasterAgentInfo
from wazuhcluster.worker.agentinfo import WorkerAgentInfo

KEY = "c" * 64
NOW = 1_800_000_000.0


def inline(f, *args):
    return maybeDeferred(f, *args)


class StatusFileNameTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        for name, ip in [("web-01", "10.0.0.5"), ("db", "any"), ("a.b_c", "fe80::1")]:
            self.assertEqual(parseStatusFileName(statusFileName(name, ip)), (name, ip))

    def test_notStatusNames(self) -> None:
        for bad in ["../x-1.2.3.4", "a/b-1.2.3.4", "web", "web-", "-10.0.0.1", "web-10.0.0.999",
                    ".web-10.0.0.5.Xy3_tmp.tmp", "web-10.0.0.0/8", "we b-any"]:
            self.assertIsNone(parseStatusFileName(bad), bad)

    def test_networkHasNoFile(self) -> None:
        self.assertIsNone(statusFileName("web", "10.0.0.0/8"))

    def test_version(self) -> None:
        self.assertEqual(versionIn(keepAliveText("web", "any", "4.9.1")), "Wazuh v4.9.1")
        self.assertEqual(versionIn(b""), "")
        self.assertEqual(versionIn(b"garbage\n - Wazuh v1.0"), "")

    def test_writeAgentInfo(self) -> None:
        home = os.path.abspath(self.mktemp())
        path = writeAgentInfo(home, "web", "10.0.0.5", when=NOW - 5)
        self.assertEqual(os.path.basename(path), "web-10.0.0.5")
        self.assertEqual(os.stat(path).st_mtime, NOW - 5)
        with open(path, "rb") as f:
            self.assertIn(b" - Wazuh v4.9.0", f.readline())
        pending = writeAgentInfo(home, "db", "any", pending=True)
        self.assertEqual(os.path.getsize(pending), 0)
        self.assertRaises(ValueError, writeAgentInfo, home, "../x", "any")
        self.assertRaises(ValueError, writeAgentInfo, home, "net", "10.0.0.0/8")
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["db-any", "web-10.0.0.5"])


class AgentStateTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertIs(AgentState.parse("active"), AgentState.ACTIVE)
        self.assertIs(AgentState.parse("Never connected"), AgentState.NEVER_CONNECTED)
        self.assertIs(AgentState.parse("never_connected"), AgentState.NEVER_CONNECTED)
        with self.assertRaises(ValueError) as caught:
            AgentState.parse("sleeping")
        self.assertIn("'Disconnected'", str(caught.exception))


class ReportingNodesTests(SynchronousTestCase):
    def test_savedAndLoaded(self) -> None:
        path = os.path.join(os.path.abspath(self.mktemp()), "agent-nodes.json")
        nodes = ReportingNodes(path)
        self.assertFalse(nodes.save())  # nothing changed, nothing written
        nodes.record("web-any", "node02", 5)
        self.assertTrue(nodes.save())
        again = ReportingNodes(path)
        again.load()
        self.assertEqual(again.nodeOf("web-any", 5, "master"), "node02")
        # A newer file than the one received was written by the master itself.
        self.assertEqual(again.nodeOf("web-any", 6, "master"), "master")
        self.assertEqual(again.nodeOf("other-any", 1, "master"), "master")

    def test_timesAloneAreSavedAtMostOnceAMinute(self) -> None:
        path = os.path.join(os.path.abspath(self.mktemp()), "agent-nodes.json")
        nodes = ReportingNodes(path)
        nodes.record("web-any", "node02", 5)
        self.assertTrue(nodes.save(now=100))
        nodes.record("web-any", "node02", 6)
        self.assertFalse(nodes.save(now=130))
        self.assertTrue(nodes.save(now=160))
        nodes.record("web-any", "node02", 7)
        nodes.record("web-any", "node03", 8)  # a node change: saved at once
        self.assertTrue(nodes.save(now=161))
        nodes.record("web-any", "node03", 9)
        self.assertTrue(nodes.save(now=162, staleFor=0))  # as at a clean stop
        again = ReportingNodes(path)
        again.load()
        self.assertEqual(again.recorded("web-any"), ("node03", 9))

    def test_damagedFileIsIgnored(self) -> None:
        path = os.path.join(os.path.abspath(self.mktemp()))
        with open(path, "w") as f:
            f.write('{"agents": [1, 2')
        logs = LogCapture(self)
        nodes = ReportingNodes(path)
        nodes.load()
        self.assertEqual(nodes.nodeOf("web-any", 1, "master"), "master")
        self.assertTrue(logs.has("cannot be read", LogLevel.warn))


    def test_anyTimeAndManyNodes(self) -> None:
        """Times before 1970 or far ahead, and many nodes, come back as recorded, saved or not."""
        path = os.path.join(os.path.abspath(self.mktemp()), "agent-nodes.json")
        nodes = ReportingNodes(path)
        cases = {f"a{i}-any": (f"node{i % 7}", t) for i, t in enumerate((0, -1, -10**18, 2**70, 1_800_000_000_123_456_789))}
        for name, (node, t) in cases.items():
            nodes.record(name, node, t)
        self.assertTrue(nodes.save())
        again = ReportingNodes(path)
        again.load()
        for name, entry in cases.items():
            self.assertEqual(nodes.recorded(name), entry)
            self.assertEqual(again.recorded(name), entry)

    def test_namesTableRebuiltWhenFull(self) -> None:
        """More distinct node names than the table holds: the unused ones are dropped, records kept."""
        self.patch(statusModule, "_NODE_BITS", 2)
        self.patch(statusModule, "_NODE_MASK", 3)
        nodes = ReportingNodes(os.path.join(os.path.abspath(self.mktemp()), "agent-nodes.json"))
        for i in range(10):
            nodes.record("web-any", f"node{i}", i)
            nodes.record("db-any", "node-db", 100 + i)
        self.assertEqual(nodes.recorded("web-any"), ("node9", 9))
        self.assertEqual(nodes.recorded("db-any"), ("node-db", 109))
        nodes.keepOnly({"db-any"})
        self.assertIsNone(nodes.recorded("web-any"))


class RegisteredAgentsTests(SynchronousTestCase):
    def test_agentsAndStatusNames(self) -> None:
        agents = [AgentKey("001", "web", "10.0.0.1", KEY), AgentKey("002", "net", "10.0.0.0/24", KEY),
                  AgentKey("003", "db", "any", KEY)]
        registered = RegisteredAgents(agents)
        self.assertEqual(len(registered), 3)
        self.assertEqual(list(registered), [RegisteredAgent("001", "web", "10.0.0.1"),
                                            RegisteredAgent("002", "net", "10.0.0.0/24"),
                                            RegisteredAgent("003", "db", "any")])
        self.assertEqual(registered.statusNames, {"web-10.0.0.1": "web-10.0.0.1", "db-any": "db-any"})
        self.assertEqual(list(RegisteredAgents()), [])


class MasterKeepsRegistryNamesTests(SynchronousTestCase):
    def test_recordsShareTheRegistrysNames(self) -> None:
        """A status's name, received from a worker, is kept as the registry's copy of it."""
        home = os.path.abspath(self.mktemp())
        for folder in ("etc", "queue/agent-info", "queue/cluster"):
            os.makedirs(os.path.join(home, folder))
        with open(os.path.join(home, "etc", "client.keys"), "wb") as f:
            f.write(AgentKey("001", "web", "10.0.0.1", KEY).line())
        master = MasterAgentInfo(WazuhHome(home), InternalOptions(), Clock(), "master", lambda c: True)
        received = "".join(["web-", "10.0.0.1"])  # a string of its own, as decoded from a stream
        counts = master._applyBlocking("node02", [(received, NOW - 5, keepAliveText("web", "10.0.0.1")),
                                                  ("db-any", NOW - 5, b"x")], NOW)
        self.assertEqual((counts["written"], counts["unknown"]), (1, 1))
        kept = next(iter(master.nodes._records))
        self.assertEqual(kept, received)
        self.assertIs(kept, master.registered.statusNames()["web-10.0.0.1"])
        self.assertEqual(master.nodes.recorded("web-10.0.0.1"), ("node02", round((NOW - 5) * 1e9)))


class AgentInfoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.logs = LogCapture(self)
        self.masterHome = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(self.masterHome.path("etc"))
        self.keys(
            ("001", "web", "10.0.0.5"), ("002", "db", "any"), ("003", "mail", "10.0.0.7"),
            ("004", "idle", "any"), ("005", "new", "any"),
        )
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.agentInfo = self.makeMasterAgentInfo()
        self.workers: dict[str, tuple[WazuhHome, WorkerAgentInfo]] = {}
        self.connections: dict[str, object] = {}

    def makeMasterAgentInfo(self) -> MasterAgentInfo:
        agentInfo = MasterAgentInfo(
            self.masterHome, FAST, self.clock, "master-node", self.master.fleet.isConnectedWorker,
            runInThread=inline,
        )
        agentInfo.startService()
        self.addCleanup(agentInfo.stopService)
        self.master.fleet.agents = agentInfo
        self.master.factory.sinksFor = agentInfo.sinksFor
        return agentInfo

    def keys(self, *agents: tuple[str, str, str]) -> None:
        lines = "".join(f"{i} {name} {ip} {KEY}\n" for i, name, ip in agents)
        with open(self.masterHome.path("etc/client.keys"), "w") as f:
            f.write(lines)

    def worker(self, name: str) -> tuple[WazuhHome, WorkerAgentInfo]:
        if name not in self.workers:
            home = WazuhHome(os.path.abspath(self.mktemp()))
            sender = WorkerAgentInfo(home, FAST, self.clock, name, runInThread=inline)
            self.workers[name] = (home, sender)
        home, sender = self.workers[name]
        connection, joined = self.net.joinWorker(self.master, settings(name))
        self.successResultOf(joined)
        self.connections[name] = connection
        sender.connectionToMaster = lambda: connection.client
        return home, sender

    def send(self, name: str) -> int:
        """One agent-info cycle of worker C{name}, driven until everything crossed."""
        d = Deferred.fromCoroutine(self.workers[name][1].sync())
        for _ in range(20):
            self.net.flush()
            self.clock.advance(0)
        return self.successResultOf(d)

    def listing(self, statuses=(), nodes=()) -> dict[str, tuple[str, str]]:
        page = self.successResultOf(
            Deferred.fromCoroutine(self.master.fleet.agentsPage(0, 100, list(statuses), list(nodes)))
        )
        return {a["id"]: (a["status"], a["node"]) for a in page["agents"]}

    def test_statusesFromTwoWorkers(self) -> None:
        """
        Statuses written on two workers appear on the master with their
        worker as node and the right status; the master's own agents and
        those never seen are shown too.
        """
        home2, _ = self.worker("node02")
        home3, _ = self.worker("node03")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 10)
        writeAgentInfo(home2.root, "db", "any", when=NOW - 3600)
        writeAgentInfo(home3.root, "mail", "10.0.0.7", pending=True)
        writeAgentInfo(self.masterHome.root, "idle", "any", when=NOW - 1)
        self.assertEqual(self.send("node02"), 2)
        self.assertEqual(self.send("node03"), 1)
        copy = self.masterHome.path("queue/agent-info/web-10.0.0.5")
        self.assertEqual(os.stat(copy).st_mtime, NOW - 10)
        with open(copy, "rb") as f, open(home2.path("queue/agent-info/web-10.0.0.5"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        self.assertEqual(
            self.listing(),
            {
                "000": ("Active", "master-node"),
                "001": ("Active", "node02"),
                "002": ("Disconnected", "node02"),
                "003": ("Pending", "node03"),
                "004": ("Active", "master-node"),
                "005": ("Never connected", "unknown"),
            },
        )
        self.assertEqual(set(self.listing(statuses=["active"])), {"000", "001", "004"})
        self.assertEqual(set(self.listing(nodes=["node02"])), {"001", "002"})
        self.assertEqual(set(self.listing(statuses=["Disconnected", "pending"], nodes=["node03"])), {"003"})
        status = self.agentInfo.statusOf("node02")
        self.assertEqual((status.total, status.running, status.date_end), (2, False, NOW))

    def metricsCounts(self) -> dict[str, int]:
        metrics = self.agentInfo.stats.metrics
        self.successResultOf(Deferred.fromCoroutine(self.agentInfo.countForMetrics()))
        return dict(metrics._state.agents)

    def listedCounts(self) -> dict[str, int]:
        counts = dict.fromkeys(("Active", "Disconnected", "Never connected", "Pending"), 0)
        for status, _ in self.listing().values():
            counts[status] += 1
        return counts

    def test_metricsCountsFollowWithoutListing(self) -> None:
        """
        The agents by status for the metrics follow the statuses the workers
        send and the time, as the listing would show them, without a full
        listing for each scrape (one at the first, one after the registry
        changed, then one every AGENT_COUNTS_RESYNC seconds).
        """
        from wazuhcluster.master import agentinfo as module
        from wazuhcluster.metrics.registry import AGENT_COUNTS_RESYNC

        listings: list[float] = []
        real = module.listAgents
        self.patch(module, "listAgents", lambda *a, **k: listings.append(self.clock.seconds()) or real(*a, **k))
        home2, _ = self.worker("node02")
        self.assertEqual(self.metricsCounts(), {"Active": 1, "Disconnected": 0, "Never connected": 5, "Pending": 0})
        self.assertEqual(len(listings), 1)
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 590)
        writeAgentInfo(home2.root, "db", "any", when=NOW - 3600)
        writeAgentInfo(home2.root, "mail", "10.0.0.7", pending=True)
        self.send("node02")
        self.assertEqual(self.metricsCounts(), {"Active": 2, "Disconnected": 1, "Never connected": 2, "Pending": 1})
        self.clock.advance(11)  # web's keep-alive is now over 600 s old
        self.assertEqual(self.metricsCounts(), {"Active": 1, "Disconnected": 2, "Never connected": 2, "Pending": 1})
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=self.clock.seconds())
        writeAgentInfo(home2.root, "mail", "10.0.0.7", when=self.clock.seconds())
        self.send("node02")
        self.assertEqual(self.metricsCounts(), {"Active": 3, "Disconnected": 1, "Never connected": 2, "Pending": 0})
        self.assertEqual(len(listings), 1)
        self.assertEqual(self.metricsCounts(), self.listedCounts())
        # An agent removed from the registry: the next scrape lists again.
        self.keys(("001", "web", "10.0.0.5"), ("002", "db", "any"), ("003", "mail", "10.0.0.7"))
        self.successResultOf(self.agentInfo.registryChanged())
        self.assertEqual(self.metricsCounts(), {"Active": 3, "Disconnected": 1, "Never connected": 0, "Pending": 0})
        scraped = len(listings)
        # A status written on the master by another program shows at the periodic listing.
        writeAgentInfo(self.masterHome.root, "db", "any", when=self.clock.seconds())
        self.clock.advance(AGENT_COUNTS_RESYNC / 2)
        self.assertEqual(self.metricsCounts()["Disconnected"], 1)
        self.clock.advance(AGENT_COUNTS_RESYNC / 2 + 1)
        counts = self.metricsCounts()
        self.assertEqual(len(listings), scraped + 1)
        self.assertEqual(counts, self.listedCounts())

    def test_healthCountsActiveAgents(self) -> None:
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW)
        writeAgentInfo(home2.root, "db", "any", when=NOW)
        self.send("node02")
        health = self.successResultOf(Deferred.fromCoroutine(self.master.fleet.health()))
        self.assertEqual([(h.name, h.active_agents) for h in health], [("master-node", 1), ("node02", 2)])
        self.assertEqual((health[1].agentinfo_total, health[1].agentinfo_end), (2, NOW))

    def test_onlyChangesAreSent(self) -> None:
        home2, _ = self.worker("node02")
        self.assertEqual(self.send("node02"), 0)  # no statuses at all
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 10)
        writeAgentInfo(home2.root, "db", "any", when=NOW - 10)
        self.assertEqual(self.send("node02"), 2)
        self.assertEqual(self.send("node02"), 0)
        writeAgentInfo(home2.root, "db", "any", when=NOW - 5)
        self.assertEqual(self.send("node02"), 1)
        self.assertEqual(os.stat(self.masterHome.path("queue/agent-info/db-any")).st_mtime, NOW - 5)

    def test_sameTextOnlyMovesTheTime(self) -> None:
        """A keep-alive that repeats the last one moves the copy's time; its file stays."""
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 10)
        self.send("node02")
        copy = self.masterHome.path("queue/agent-info/web-10.0.0.5")
        inode = os.stat(copy).st_ino
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 5)
        self.assertEqual(self.send("node02"), 1)
        self.assertEqual((os.stat(copy).st_ino, os.stat(copy).st_mtime), (inode, NOW - 5))
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 1, version="4.9.1")
        self.send("node02")
        with open(copy, "rb") as f:
            self.assertIn(b"Wazuh v4.9.1", f.read())
        self.assertEqual(os.stat(copy).st_mtime, NOW - 1)

    def test_everythingSentAgainOnANewConnection(self) -> None:
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 10)
        self.assertEqual(self.send("node02"), 1)
        self.connections["node02"].client.transport.loseConnection()
        self.net.flush()
        self.worker("node02")
        self.assertEqual(self.send("node02"), 1)
        self.assertEqual(self.listing()["001"], ("Active", "node02"))

    def test_agentMovesToAnotherWorker(self) -> None:
        """
        The node shown is that of the newest status; the old worker's
        stale status, sent again, does not take the agent back.
        """
        home2, _ = self.worker("node02")
        home3, _ = self.worker("node03")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 100)
        self.send("node02")
        self.assertEqual(self.listing()["001"], ("Active", "node02"))
        writeAgentInfo(home3.root, "web", "10.0.0.5", when=NOW - 50)
        self.send("node03")
        self.assertEqual(self.listing()["001"], ("Active", "node03"))
        # node02 reconnects and sends its (older) status again.
        self.connections["node02"].client.transport.loseConnection()
        self.net.flush()
        self.worker("node02")
        self.send("node02")
        self.assertEqual(self.listing()["001"], ("Active", "node03"))
        self.assertEqual(os.stat(self.masterHome.path("queue/agent-info/web-10.0.0.5")).st_mtime, NOW - 50)
        # Then the agent reports to the master itself.
        writeAgentInfo(self.masterHome.root, "web", "10.0.0.5", when=NOW - 1)
        self.assertEqual(self.listing()["001"], ("Active", "master-node"))

    def test_statusFromTheFutureRefused(self) -> None:
        """
        A status dated 2100 would keep its agent Active for ever and make
        every real status older: it is refused, one WARNING names the
        worker, and a status within the allowed skew is taken.
        """
        home2, _ = self.worker("node02")
        year2100 = 4102444800.0
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=year2100)
        writeAgentInfo(home2.root, "db", "any", when=NOW + FAST.agent_info_max_skew - 1)
        self.send("node02")
        self.assertFalse(os.path.exists(self.masterHome.path("queue/agent-info/web-10.0.0.5")))
        self.assertEqual(
            os.stat(self.masterHome.path("queue/agent-info/db-any")).st_mtime, NOW + FAST.agent_info_max_skew - 1
        )
        warnings = self.logs.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("Refused 1 agent statuses from worker node02", warnings[0])
        self.assertIn("web-10.0.0.5", warnings[0])
        self.assertEqual(self.listing()["001"], ("Never connected", "unknown"))

    def test_copyFromTheFutureLosesToARealStatus(self) -> None:
        """A copy dated 2100 already on the master (from before the check) gives way."""
        home2, _ = self.worker("node02")
        writeAgentInfo(self.masterHome.root, "web", "10.0.0.5", when=4102444800.0)
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW - 5)
        self.send("node02")
        self.assertEqual(os.stat(self.masterHome.path("queue/agent-info/web-10.0.0.5")).st_mtime, NOW - 5)
        self.assertEqual(self.listing()["001"], ("Active", "node02"))

    def test_unknownAgentsAreDropped(self) -> None:
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "ghost", "10.9.9.9", when=NOW)
        # Registered with another address: not this agent.
        writeAgentInfo(home2.root, "web", "10.0.0.99", when=NOW)
        self.assertEqual(self.send("node02"), 2)
        self.assertEqual(os.listdir(self.masterHome.path("queue/agent-info")), [])
        self.assertTrue(self.logs.has("not registered on the master", LogLevel.debug))
        self.assertFalse(self.logs.lines(LogLevel.warn))

    def test_nodesRememberedAcrossRestart(self) -> None:
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW)
        self.send("node02")
        restarted = self.makeMasterAgentInfo()
        page = self.successResultOf(Deferred.fromCoroutine(restarted.agentsPage(0, 10, [], [])))
        self.assertEqual({a["id"]: a["node"] for a in page["agents"]}["001"], "node02")

    def test_removedAgentsFilesGoFromTheMaster(self) -> None:
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW)
        writeAgentInfo(home2.root, "db", "any", when=NOW)
        self.send("node02")
        group = self.masterHome.path("queue/agent-groups/001")
        os.makedirs(os.path.dirname(group))
        with open(group, "w") as f:
            f.write("default\n")
        # client.keys edited by hand: web is gone, and a line is broken.
        with open(self.masterHome.path("etc/client.keys"), "w") as f:
            f.write(f"002 db any {KEY}\n003 broken\n")
        self.successResultOf(self.agentInfo.registryChanged())
        self.assertEqual(os.listdir(self.masterHome.path("queue/agent-info")), ["db-any"])
        self.assertFalse(os.path.exists(group))
        self.assertIsNone(self.agentInfo.nodes.recorded("web-10.0.0.5"))
        self.assertEqual(self.agentInfo.nodes.recorded("db-any")[0], "node02")
        self.assertTrue(self.logs.has("client.keys:2", LogLevel.warn))

    def test_listAgentsFromAWorker(self) -> None:
        """A worker asks the master for the agents over its link, page by page."""
        self.keys(*[(f"{n:03d}", f"agent{n}", "any") for n in range(1, 251)])
        self.worker("node02")
        client = self.connections["node02"].client

        def ask(**arguments):
            # AMP drops the connection when an error answer finds no errback:
            # take the outcome as soon as it comes.
            outcome: list = []
            client.callRemote(ListAgents, **arguments).addBoth(outcome.append)
            self.net.flush()
            return outcome[0]

        first = ask(offset=0, limit=1000, statuses=[], nodes=[])
        self.assertEqual((len(first["agents"]), first["total"]), (ListAgents.pageSize, 251))
        last = ask(offset=200, limit=100, statuses=[], nodes=[])
        self.assertEqual([a["id"] for a in last["agents"]][-1], "250")
        wrong = ask(offset=0, limit=10, statuses=["sleepy"], nodes=[])
        self.assertTrue(wrong.check(RegistryRefused))
        self.assertIn("sleepy", wrong.getErrorMessage())

    def hostileStream(self, records: list[tuple[str, bytes]], deletions=()) -> object:
        home2, _ = self.worker("node02")
        files = []
        for name, content in records:
            path = os.path.join(home2.root, "raw", str(len(files)))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
            os.utime(path, (NOW, NOW))
            files.append((name, path))
        writer = BundleWriter(files, deletions)
        d = Deferred.fromCoroutine(
            self.connections["node02"].client.streams.send("agent-info", "{}", chunksOf(writer.chunks()), timeout=5)
        )
        for _ in range(20):
            self.net.flush()
            self.clock.advance(0)
        return d

    def test_hostileStatusesAreRefused(self) -> None:
        """Bad names, oversized statuses and deletions are refused one by one; good ones taken."""
        d = self.hostileStream(
            [
                ("../../etc/client.keys", b"x"),
                ("/tmp/web-10.0.0.5", b"x"),
                ("sub/web-10.0.0.5", b"x"),
                ("web-10.0.0.5", b"y" * (64 * 1024 + 1)),
                ("db-any", keepAliveText("db", "any")),
            ],
            deletions=["mail-10.0.0.7"],
        )
        answer = json.loads(self.successResultOf(d))
        self.assertEqual((answer["written"], answer["refused"]), (1, 5))
        self.assertEqual(os.listdir(self.masterHome.path("queue/agent-info")), ["db-any"])
        with open(self.masterHome.path("etc/client.keys")) as f:
            self.assertIn("001 web", f.read())
        self.assertEqual(
            len([line for line in self.logs.lines(LogLevel.warn) if "Refused a status from worker node02" in line]), 5
        )

    def test_corruptStreamWritesNothing(self) -> None:
        home2, _ = self.worker("node02")
        writeAgentInfo(home2.root, "web", "10.0.0.5", when=NOW)
        chunks = list(BundleWriter([("web-10.0.0.5", home2.path("queue/agent-info/web-10.0.0.5"))], []).chunks())
        d = Deferred.fromCoroutine(
            self.connections["node02"].client.streams.send(
                "agent-info", "{}", chunksOf(iter([chunks[0][:-3]])), timeout=5
            )
        )
        for _ in range(20):
            self.net.flush()
            self.clock.advance(0)
        self.failureResultOf(d, StreamFailed)
        self.assertEqual(os.listdir(self.masterHome.path("queue/agent-info")), [])
        self.assertEqual(self.agentInfo.statusOf("node02").running, False)

    def test_onlyConnectedWorkersMaySend(self) -> None:
        """A connection the fleet no longer holds (replaced, dropped) cannot send statuses."""
        self.worker("node02")
        connection = self.connections["node02"]
        self.master.fleet.leave(connection.server)
        self.assertRaises(StreamRefused, self.agentInfo.sinksFor(connection.server)["agent-info"][0], "{}")
        self.assertTrue(self.logs.has("not a connected worker", LogLevel.warn))


class WorkerCleanupTests(SynchronousTestCase):
    def test_filesOfUnregisteredAgentsRemoved(self) -> None:
        home = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(home.path("etc"))
        registry = AgentRegistry(home)
        self.assertEqual(registry.removeFilesOfUnregistered(), ([], []))  # no client.keys: nothing
        writeAgentInfo(home.root, "web", "10.0.0.5")
        writeAgentInfo(home.root, "gone", "any")
        os.makedirs(home.path("queue/agent-groups"))
        for name in ("001", "009", "README"):
            with open(home.path("queue/agent-groups", name), "w") as f:
                f.write("default\n")
        with open(home.path("queue/agent-info/notes.txt"), "w") as f:
            f.write("an operator's file\n")
        self.assertEqual(registry.removeFilesOfUnregistered(), ([], []))  # still no client.keys
        with open(registry.keysPath, "w") as f:
            f.write(f"001 web 10.0.0.5 {KEY}\n")
        removed, warnings = registry.removeFilesOfUnregistered()
        self.assertEqual(
            sorted(os.path.relpath(p, home.root) for p in removed),
            ["queue/agent-groups/009", "queue/agent-info/gone-any"],
        )
        self.assertEqual(warnings, [])
        self.assertEqual(sorted(os.listdir(home.path("queue/agent-groups"))), ["001", "README"])
        self.assertEqual(sorted(os.listdir(home.path("queue/agent-info"))), ["notes.txt", "web-10.0.0.5"])
