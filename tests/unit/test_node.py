"""
The node's top service: why it cannot start, said once and plainly, and
how it says it stopped; the check of its ports before anything starts.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_handshake import LogCapture
from wazuhcluster.node import NodeService, loadNode, portProblem
from wazuhcluster.nodehome import writeNodeHome


class _TakenPort(Service):
    def privilegedStartService(self) -> None:
        raise CannotListenError("127.0.0.1", 1516, OSError(98, "Address already in use"))


class NodeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.home, True)
        self.port = _freePort()
        self.setup = loadNode(writeNodeHome(self.home, "master", "master", "a" * 32, self.port).ossecConf)
        self.logs = LogCapture(self)

    def test_portTakenAtStart(self) -> None:
        """
        A port taken between the check and the listening: one CRITICAL
        line, the reason handed to whoever waits for the start (a
        daemonizing twistd's terminal), and exit status 1, no traceback.
        """
        node = NodeService(self.setup, foreground=False)
        told: list[str] = []
        node.reportStartFailure = told.append
        _TakenPort().setServiceParent(node)
        exit = self.assertRaises(SystemExit, node.privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(told, ["cannot listen on 127.0.0.1:1516: Address already in use"])
        critical = [e for e in self.logs.events if e["log_level"] == LogLevel.critical and e.get("log_source") is node]
        self.assertEqual([e["problem"] for e in critical], told)

    def test_stopSaysWhyAndThatItStopped(self) -> None:
        node = NodeService(self.setup)
        node.startService()
        node.stopReason = "SIGTERM"
        node.stopService()
        self.assertEqual(
            self.logs.lines()[-2:], ["Stopping master node master (SIGTERM).", "Master node master stopped."]
        )


class PortProblemTests(SynchronousTestCase):
    def test_takenPort(self) -> None:
        """A master whose cluster port is taken is told so before it starts; a free one is fine."""
        home = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, home, True)
        port = _freePort()
        setup = loadNode(writeNodeHome(home, "master", "master", "a" * 32, port).ossecConf)
        self.assertIsNone(portProblem(setup))
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen(1)
            self.assertEqual(portProblem(setup), f"cannot listen on 127.0.0.1:{port}: Address already in use")
        worker = loadNode(writeNodeHome(os.path.join(home, "w1"), "w1", "worker", "a" * 32, port).ossecConf)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen(1)
            self.assertIsNone(portProblem(worker), "a worker does not listen on the cluster port")


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
