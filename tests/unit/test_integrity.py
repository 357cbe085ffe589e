"""
Integrity sync end to end in memory: a real master and worker (their
integrity services, streams, sealed TLS link) on a Clock, with real files
in temporary homes.  Blocking work runs inline instead of in threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.support.memorynet import FAST, MasterHarness, MemoryNetwork, settings
from tests.unit.test_handshake import LogCapture
from wazuhcluster.home import WazuhHome
from wazuhcluster.protocol.stream import chunksOf
from wazuhcluster.sync.bundle import BundleWriter
from wazuhcluster.master.integrity import MasterIntegrity
from wazuhcluster.sync.table import SyncTable
from wazuhcluster.worker.integrity import WorkerIntegrity

KEY = "b" * 64


def inline(f, *args):
    return maybeDeferred(f, *args)


def write(home: WazuhHome, relpath: str, data: bytes, mtime: float | None = None) -> str:
    path = home.path(relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def md5(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


class IntegrityTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.logs = LogCapture(self)
        self.table = SyncTable.load()
        self.masterHome = WazuhHome(os.path.abspath(self.mktemp()))
        self.workerHome = WazuhHome(os.path.abspath(self.mktemp()))
        for home in (self.masterHome, self.workerHome):
            os.makedirs(home.path("etc"))
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.masterIntegrity = MasterIntegrity(
            self.masterHome, self.table, FAST, self.clock, lambda: self.master.fleet.workers,
            runInThread=inline, watch=False,
        )
        self.master.fleet.integrityStatus = self.masterIntegrity.statusOf
        self.master.factory.sinksFor = self.masterIntegrity.sinksFor
        self.worker = WorkerIntegrity(self.workerHome, self.table, FAST, self.clock, "node02", runInThread=inline)
        # Started as the daemon starts them (their own cycles are driven by hand here).
        self.masterIntegrity.startService()
        self.addCleanup(self.masterIntegrity.stopService)
        self.worker.startService()
        self.addCleanup(self.worker.stopService)

    def join(self) -> None:
        self.connection, joined = self.net.joinWorker(
            self.master, settings("node02"), sinksFor=self.worker.sinksFor
        )
        self.successResultOf(joined)
        self.worker.connectionToMaster = lambda: self.connection.client

    def sync(self) -> None:
        """One worker cycle, driven until everything has crossed."""
        d = self.worker._cycle()
        for _ in range(20):
            self.net.flush()
            self.clock.advance(0)
        self.successResultOf(d)
        self.assertFalse(self.worker.syncing)

    def masterFiles(self) -> None:
        write(self.masterHome, "etc/client.keys", f"001 web 10.0.0.5 {KEY}\n002 db any {KEY}\n".encode(), 1_700_000_000)
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'></group>\n", 1_700_000_001)
        write(self.masterHome, "etc/decoders/local_decoder.xml", b"<decoder name='x'/>\n", 1_700_000_002)
        write(self.masterHome, "etc/lists/blacklist", b"1.1.1.1:\n" * 5000, 1_700_000_003)
        write(self.masterHome, "etc/shared/default/agent.conf", b"<agent_config/>\n", 1_700_000_004)
        write(self.masterHome, "queue/agent-groups/001", b"default\n", 1_700_000_005)
        write(self.masterHome, "etc/ossec.conf", b"<ossec_config>master</ossec_config>\n")

    def test_freshWorkerReceivesEverything(self) -> None:
        """
        Every file of the table arrives byte for byte with the master's mtime
        and the table's mode; ossec.conf does not move; the status says so.
        """
        self.masterFiles()
        write(self.workerHome, "etc/ossec.conf", b"<ossec_config>worker</ossec_config>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        for relpath, mode in [
            ("etc/client.keys", 0o640),
            ("etc/rules/local_rules.xml", 0o660),
            ("etc/decoders/local_decoder.xml", 0o660),
            ("etc/lists/blacklist", 0o660),
            ("etc/shared/default/agent.conf", 0o660),
            ("queue/agent-groups/001", 0o660),
        ]:
            source, copy = self.masterHome.path(relpath), self.workerHome.path(relpath)
            self.assertEqual(md5(copy), md5(source), relpath)
            self.assertEqual(stat.S_IMODE(os.stat(copy).st_mode), mode, relpath)
            self.assertEqual(os.stat(copy).st_mtime_ns, os.stat(source).st_mtime_ns, relpath)
        with open(self.workerHome.path("etc/ossec.conf"), "rb") as f:
            self.assertEqual(f.read(), b"<ossec_config>worker</ossec_config>\n")
        status = self.masterIntegrity.statusOf("node02")
        self.assertEqual((status.missing, status.shared, status.extra), (6, 0, 0))
        self.assertGreater(status.date_end, 0)
        self.assertFalse(status.running)
        health = self.successResultOf(Deferred.fromCoroutine(self.master.fleet.health()))[1]
        self.assertEqual(health.integrity_missing, 6)
        self.assertEqual(self.worker.lastResult["written"], 6)

    def test_onlyWhatChangedMoves(self) -> None:
        """An edited rule arrives; nothing else is rewritten; in sync afterwards."""
        self.masterFiles()
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        before = {
            p: os.stat(self.workerHome.path(p)).st_ino
            for p in ("etc/client.keys", "etc/lists/blacklist", "etc/decoders/local_decoder.xml")
        }
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        self.assertEqual(md5(self.workerHome.path("etc/rules/local_rules.xml")),
                         md5(self.masterHome.path("etc/rules/local_rules.xml")))
        after = {p: os.stat(self.workerHome.path(p)).st_ino for p in before}
        self.assertEqual(before, after)
        status = self.masterIntegrity.statusOf("node02")
        self.assertEqual((status.missing, status.shared, status.extra), (0, 1, 0))
        self.sync()
        self.assertEqual((status.missing, status.shared, status.extra), (0, 0, 0))

    def test_deletionsAndWorkerOnlyFiles(self) -> None:
        """
        A file deleted on the master disappears; a rule added on the worker is
        removed and its empty folder pruned under etc/shared; nothing outside
        the table is touched.
        """
        self.masterFiles()
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        os.unlink(self.masterHome.path("etc/lists/blacklist"))
        write(self.workerHome, "etc/rules/worker_only.xml", b"<group/>\n")
        write(self.workerHome, "etc/shared/gone/agent.conf", b"<agent_config/>\n")
        write(self.workerHome, "etc/internal_options.conf", b"kept\n")
        write(self.workerHome, "logs/ossec.log", b"kept\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        self.assertFalse(os.path.exists(self.workerHome.path("etc/lists/blacklist")))
        self.assertFalse(os.path.exists(self.workerHome.path("etc/rules/worker_only.xml")))
        self.assertFalse(os.path.exists(self.workerHome.path("etc/shared/gone")))
        self.assertTrue(os.path.isdir(self.workerHome.path("etc/shared")))
        self.assertTrue(os.path.exists(self.workerHome.path("etc/internal_options.conf")))
        self.assertTrue(os.path.exists(self.workerHome.path("logs/ossec.log")))

    def test_extraValidGroupsReachTheMasterForKnownAgents(self) -> None:
        """
        A group assignment written on the worker for an agent the master
        knows is sent to the master and kept; one for an unknown agent is not.
        """
        self.masterFiles()
        write(self.workerHome, "queue/agent-groups/002", b"web\n")
        write(self.workerHome, "queue/agent-groups/777", b"unknown\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        self.net.flush()
        with open(self.masterHome.path("queue/agent-groups/002"), "rb") as f:
            self.assertEqual(f.read(), b"web\n")
        self.assertFalse(os.path.exists(self.masterHome.path("queue/agent-groups/777")))
        status = self.masterIntegrity.statusOf("node02")
        self.assertEqual(status.extra_valid, 2)
        self.assertEqual(status.agentgroups_total, 1)
        # Extra-valid files are never deleted as extra; but once the sync
        # brought the master's client.keys, the group of an agent it does not
        # register is removed, and that of a registered agent kept.
        self.assertFalse(os.path.exists(self.workerHome.path("queue/agent-groups/777")))
        self.assertTrue(os.path.exists(self.workerHome.path("queue/agent-groups/002")))

    def test_hostileMasterCannotWriteOutsideTheTable(self) -> None:
        """
        A master (holding the key) that sends paths escaping the table gets
        them refused and logged; the rest of its bundle still lands.
        """
        self.join()
        outside = os.path.join(os.path.dirname(self.workerHome.root), "escaped")
        evil = write(self.masterHome, "etc/rules/evil.xml", b"owned\n")
        files = [
            ("../escaped", evil),
            ("etc/../../escaped", evil),
            (outside, evil),
            ("etc/ossec.conf", evil),
            ("logs/cluster.log", evil),
            ("etc/rules/good.xml", evil),
        ]
        writer = BundleWriter(files, ["../../etc/passwd", "etc/ossec.conf"])
        pieces = writer.chunks()
        self.worker._bundleDone = None
        sent = self.connection.server.streams.send(
            "integrity-bundle", "{}", chunksOf(pieces), timeout=FAST.timeout_receiving_file
        )
        from twisted.internet.defer import Deferred

        sent = Deferred.fromCoroutine(sent)
        self.net.flush()
        result = json.loads(self.successResultOf(sent))
        self.assertEqual(result["written"], 1)
        self.assertEqual(result["refusedCount"], 7)
        self.assertFalse(os.path.exists(outside))
        self.assertFalse(os.path.exists(self.workerHome.path("etc/ossec.conf")))
        self.assertFalse(os.path.exists(self.workerHome.path("logs/cluster.log")))
        self.assertTrue(os.path.exists(self.workerHome.path("etc/rules/good.xml")))
        self.assertTrue(self.logs.has("Refused a file from master master-node", LogLevel.warn))

    def test_brokenTransferKeepsOldFiles(self) -> None:
        """
        A transfer cut halfway (the link dies) leaves the old files as they
        were and no temporary file behind.
        """
        self.masterFiles()
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        old = md5(self.workerHome.path("etc/lists/blacklist"))
        write(self.masterHome, "etc/lists/blacklist", os.urandom(3 * 1024 * 1024))
        self.successResultOf(self.masterIntegrity.recalculate())
        d = self.worker._cycle()
        for _ in range(6):  # part of the bundle crosses
            self.connection.pump.pump()
        self.connection.serverTLS.transport.abortConnection()
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual(md5(self.workerHome.path("etc/lists/blacklist")), old)
        leftovers = [
            name
            for folder, _, names in os.walk(self.workerHome.root)
            for name in names
            if name.startswith(".wazuhcluster-")
        ]
        self.assertEqual(leftovers, [])

    def test_linkLostBeforeTheBundleEndsTheWait(self) -> None:
        """
        The master answered that files will come, then the link died before
        the bundle opened: the worker's sync ends at once, not after
        timeout_receiving_file, so the next one can start when it rejoins.
        """
        from twisted.internet.defer import Deferred

        self.masterFiles()
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()

        async def neverSends(*args: object) -> None:
            await Deferred()

        self.masterIntegrity._transfer = neverSends
        d = self.worker._cycle()
        self.net.flush()
        self.assertTrue(self.worker.syncing)
        self.connection.serverTLS.transport.abortConnection()
        self.net.flush()
        self.successResultOf(d)
        self.assertFalse(self.worker.syncing)
        self.assertTrue(self.logs.has("the connection to the master was lost", LogLevel.warn))
