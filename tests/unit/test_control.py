"""
The control socket's answers and cluster_control's output, in memory, with a
real fleet behind them.
"""

from __future__ import annotations

import io
import os

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import MasterHarness, MemoryNetwork, settings
from wazuhcluster.control.cli import findActions, main, parser, runAction
from wazuhcluster.control.client import ControlClient
from wazuhcluster.control.health import HealthAction
from wazuhcluster.agents.agentinfo import writeAgentInfo
from wazuhcluster.control.list_agents import ListAgentsAction, parseStatuses
from wazuhcluster.control.list_nodes import ListNodesAction
from wazuhcluster.control.server import ControlProtocol
from wazuhcluster.master.fleet import FleetView
from wazuhcluster.home import WazuhHome
from wazuhcluster.protocol.nodeinfo import PAGE_SIZE
from wazuhcluster.master.agentinfo import MasterAgentInfo


class ControlHarness(SynchronousTestCase):
    """A master's fleet in memory, and cluster_control actions run against its control protocol."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)

    def joinWorkers(self, *names: str) -> None:
        for index, name in enumerate(names):
            _, joined = self.net.joinWorker(self.master, settings(name), f"10.0.1.{index % 250 + 1}")
            self.successResultOf(joined)

    def run_(self, action, *argv: str) -> tuple[int, str]:
        arguments = parser(findActions()).parse_args(list(argv))
        server = ControlProtocol(FleetView(self.master.fleet))
        client = amp.AMP()
        pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False)
        out, self.err = io.StringIO(), io.StringIO()
        status = Deferred.fromCoroutine(runAction(action, ControlClient(client), arguments, out, self.err))
        pump.flush()
        return self.successResultOf(status), out.getvalue()


class ControlTests(ControlHarness):
    def test_listNodes(self) -> None:
        self.joinWorkers("node03", "node02")
        status, out = self.run_(ListNodesAction(), "-l")
        self.assertEqual(status, 0)
        lines = out.splitlines()
        self.assertEqual(lines[1].split(), ["Name", "Address", "Type", "Version"])
        self.assertEqual(
            [line.split()[:3] for line in lines[3:6]],
            [["master-node", "10.0.0.1", "master"], ["node02", "10.0.1.2", "worker"], ["node03", "10.0.1.1", "worker"]],
        )
        self.assertTrue(lines[0].startswith("---") and lines[2] == lines[0] and lines[-1] == lines[0])

    def test_filterAndMissingNode(self) -> None:
        self.joinWorkers("node02", "node03")
        status, out = self.run_(ListNodesAction(), "-l", "-fn", "node03", "node09")
        self.assertEqual(status, 1)
        self.assertIn("node03", out)
        self.assertNotIn("node02", out)
        self.assertNotIn("node09", out)
        self.assertEqual(self.err.getvalue(), "Error: node 'node09' is not connected to the cluster.\n")

    def test_onlyMissingNodesPrintOnlyTheError(self) -> None:
        """
        When no node asked for with -fn is connected, -l and -i print no
        empty table or header: only the error, on standard error.
        """
        self.joinWorkers("node02")
        for action, argv in ((ListNodesAction(), ["-l"]), (HealthAction(), ["-i"]), (HealthAction(), ["-i", "more"])):
            status, out = self.run_(action, *argv, "-fn", "nosuch", "ghost")
            self.assertEqual((status, out), (1, ""))
            self.assertEqual(
                self.err.getvalue(),
                "Error: node 'nosuch' is not connected to the cluster.\n"
                "Error: node 'ghost' is not connected to the cluster.\n",
            )

    def test_healthCountsWhatItLists(self) -> None:
        """-i more -fn X says "Connected nodes (1)" for the one node it lists."""
        self.joinWorkers("node02", "node03")
        for argv in (["-i"], ["-i", "more"]):
            status, out = self.run_(HealthAction(), *argv, "-fn", "node03")
            self.assertEqual(status, 0)
            self.assertIn("Connected nodes (1):", out)
            self.assertIn("node03 (", out)
            self.assertNotIn("node02", out)
            status, out = self.run_(HealthAction(), *argv)
            self.assertIn("Connected nodes (3):", out)

    def test_manyNodesTravelInPages(self) -> None:
        names = [f"node{n:03d}" for n in range(PAGE_SIZE + 30)]
        self.joinWorkers(*names)
        status, out = self.run_(ListNodesAction(), "-l")
        self.assertEqual(status, 0)
        for name in names:
            self.assertIn(f"\n{name} ", out)

    def test_health(self) -> None:
        self.joinWorkers("node02")
        status, out = self.run_(HealthAction(), "-i")
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("Cluster name: wazuh\n"))
        self.assertIn("Connected nodes (2):", out)
        self.assertIn("node02 (10.0.1.1): worker, version", out)
        self.assertIn("last keep alive 20", out)

    def test_healthMore(self) -> None:
        self.joinWorkers("node02")
        status, out = self.run_(HealthAction(), "-i", "more")
        self.assertEqual(status, 0)
        self.assertIn("    node02 (10.0.1.1)\n        Version: 4.9.0\n        Type: worker\n", out)
        self.assertIn("Last keep alive: 20", out)
        self.assertIn("Running since: 20", out)

    def test_actionsArePlugins(self) -> None:
        kinds = {type(a).__name__ for a in findActions()}
        self.assertTrue({"ListNodesAction", "HealthAction"} <= kinds)

    def test_actionsAreExclusive(self) -> None:
        self.assertRaises(SystemExit, parser(findActions()).parse_args, ["-l", "-i"])
        self.assertRaises(SystemExit, parser(findActions()).parse_args, [])


class AgentListTests(ControlHarness):
    """C{cluster_control -a} against a master that keeps agent info."""

    def setUp(self) -> None:
        super().setUp()
        now = self.clock.seconds()
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(self.home.path("etc"))
        with open(self.home.path("etc", "client.keys"), "w") as f:
            f.write("001 web 10.0.0.5 " + "a" * 64 + "\n")
            f.write("002 db any " + "b" * 64 + "\n")
            f.write("003 mail 10.0.0.7 " + "c" * 64 + "\n")
        writeAgentInfo(self.home.root, "web", "10.0.0.5", when=now - 5)
        writeAgentInfo(self.home.root, "db", "any", when=now - 4000)
        agentInfo = MasterAgentInfo(
            self.home, self.master.settings.options, self.clock, "master-node",
            self.master.fleet.isConnectedWorker, runInThread=lambda f, *a: Deferred.fromCoroutine(_now(f, *a)),
        )
        agentInfo.startService()
        self.master.fleet.agents = agentInfo

    def test_listAgents(self) -> None:
        status, out = self.run_(ListAgentsAction(), "-a")
        self.assertEqual(status, 0)
        lines = out.splitlines()
        self.assertEqual(lines[1].split(), ["ID", "Address", "Name", "Status", "Node"])
        self.assertEqual(
            [line.split() for line in lines[3:7]],
            [
                ["000", "127.0.0.1", lines[3].split()[2], "Active", "master-node"],
                ["001", "10.0.0.5", "web", "Active", "master-node"],
                ["002", "any", "db", "Disconnected", "master-node"],
                ["003", "10.0.0.7", "mail", "Never", "connected", "unknown"],
            ],
        )
        self.assertEqual(lines[-1], "Listing 4 agent(s).")

    def test_filterByStatus(self) -> None:
        status, out = self.run_(ListAgentsAction(), "-a", "-fs", "Never", "connected", "disconnected")
        self.assertEqual(status, 0)
        self.assertEqual([line.split()[0] for line in out.splitlines()[3:5]], ["002", "003"])
        self.assertEqual(out.splitlines()[-1], "Found 2 agent(s) with status 'Never connected', 'Disconnected'.")
        status, out = self.run_(ListAgentsAction(), "-a", "-fs", "sleeping")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(self.err.getvalue().startswith("Error: unknown agent status 'sleeping'"), self.err.getvalue())

    def test_filterByNode(self) -> None:
        status, out = self.run_(ListAgentsAction(), "-a", "-fn", "unknown")
        self.assertEqual([line.split()[0] for line in out.splitlines()[3:-2]], ["003"])

    def test_manyAgentsTravelInPages(self) -> None:
        with open(self.home.path("etc", "client.keys"), "w") as f:
            for n in range(1, 351):
                f.write(f"{n:03d} agent{n} any " + "d" * 64 + "\n")
        status, out = self.run_(ListAgentsAction(), "-a")
        self.assertEqual(out.splitlines()[-1], "Listing 351 agent(s).")
        self.assertEqual(len(set(line.split()[0] for line in out.splitlines()[3:-2])), 351)

    def test_healthShowsActiveAgents(self) -> None:
        status, out = self.run_(HealthAction(), "-i", "more")
        self.assertIn("    master-node (10.0.0.1)\n        Version: 4.9.0\n        Type: master\n        Active agents: 2\n", out)

    def test_parseStatuses(self) -> None:
        self.assertEqual([s.value for s in parseStatuses(["active", "Never", "connected", "pending"])],
                         ["Active", "Never connected", "Pending"])
        self.assertEqual([s.value for s in parseStatuses(["never_connected"])], ["Never connected"])


async def _now(f, *args):
    return f(*args)


class CommandLineTests(SynchronousTestCase):
    def writeConfig(self, cluster: str) -> str:
        home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(home, "etc"))
        with open(os.path.join(home, "etc", "ossec.conf"), "w") as f:
            f.write(f"<ossec_config>{cluster}</ossec_config>\n")
        return home

    def test_disabledCluster(self) -> None:
        home = self.writeConfig("<cluster><disabled>yes</disabled><key></key></cluster>")
        err = io.StringIO()
        with self.assertRaises(SystemExit) as e:
            main(["--home", home, "-l"], out=io.StringIO(), err=err)
        self.assertEqual(e.exception.code, 1)
        self.assertEqual(err.getvalue(), "Cluster is not running.\n")

    def test_brokenConfiguration(self) -> None:
        home = self.writeConfig("<cluster><key>short</key>")
        err = io.StringIO()
        with self.assertRaises(SystemExit) as e:
            main(["--home", home, "-l"], out=io.StringIO(), err=err)
        self.assertEqual(e.exception.code, 1)
        self.assertIn("ossec.conf", err.getvalue())
        self.assertTrue(err.getvalue().startswith("Error: "))
