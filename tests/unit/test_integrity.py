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
        d = self.worker._timedCycle()
        for _ in range(60):
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
        d = self.worker._timedCycle()
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
        d = self.worker._timedCycle()
        self.net.flush()
        self.assertTrue(self.worker.syncing)
        self.connection.serverTLS.transport.abortConnection()
        self.net.flush()
        self.successResultOf(d)
        self.assertFalse(self.worker.syncing)
        self.assertTrue(self.logs.has("the connection to the master was lost", LogLevel.warn))


class FleetScaleTests(IntegrityTests):
    """
    What an in-sync worker and a change cost the master: which streams cross,
    what the master decodes, what it builds.
    """

    def setUp(self) -> None:
        super().setUp()
        self.opened: list[tuple[str, str]] = []
        sinksFor = self.masterIntegrity.sinksFor

        def recording(connection: object) -> dict:
            sinks = sinksFor(connection)
            return {
                kind: ((lambda info, kind=kind, make=make: (self.opened.append((kind, info)), make(info))[1]), size)
                for kind, (make, size) in sinks.items()
            }

        self.master.factory.sinksFor = recording

    def syncedWorker(self) -> None:
        self.masterFiles()
        for i in range(300):
            write(self.masterHome, f"etc/shared/g{i}/agent.conf", b"<agent_config/>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        del self.opened[:]

    def test_inSyncCheckDecodesNothing(self) -> None:
        """An in-sync worker sends one digest; no manifest is opened, nothing is sent."""
        self.syncedWorker()
        sent = self.masterIntegrity.stats["integrity_files_sent"]
        self.sync()
        self.assertEqual([kind for kind, _ in self.opened], ["integrity-check"])
        self.assertEqual(self.masterIntegrity.stats["integrity_files_sent"], sent)
        self.assertEqual(self.worker.generation, self.masterIntegrity.generation)

    def test_changeSentFromTheAcknowledgedGeneration(self) -> None:
        """
        The master changed (a file edited, one added, one removed): the
        worker's check carries the digest of the generation it holds, so the
        master sends the difference at once; no manifest crosses, and the
        status counts what moved.
        """
        self.syncedWorker()
        generation = self.masterIntegrity.generation
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        write(self.masterHome, "etc/rules/new_rules.xml", b"<group name='new'/>\n")
        os.unlink(self.masterHome.path("etc/shared/g7/agent.conf"))
        self.successResultOf(self.masterIntegrity.recalculate())
        self.assertEqual(self.masterIntegrity.generation, generation + 1)
        self.sync()
        self.assertEqual([kind for kind, _ in self.opened], ["integrity-check"])
        for relpath in ("etc/rules/local_rules.xml", "etc/rules/new_rules.xml"):
            self.assertEqual(md5(self.workerHome.path(relpath)), md5(self.masterHome.path(relpath)), relpath)
        self.assertFalse(os.path.exists(self.workerHome.path("etc/shared/g7/agent.conf")))
        status = self.masterIntegrity.statusOf("node02")
        self.assertEqual((status.missing, status.shared, status.extra), (1, 1, 1))
        self.assertEqual(self.worker.generation, generation + 1)
        del self.opened[:]
        self.sync()
        self.assertEqual([kind for kind, _ in self.opened], ["integrity-check"])
        self.assertEqual(self.worker.lastResult["written"], 2)

    def test_severalGenerationsBehind(self) -> None:
        """A worker that missed three changes gets all of them from its one check."""
        self.syncedWorker()
        for i in range(3):
            write(self.masterHome, f"etc/rules/r{i}.xml", f"<group name='r{i}'/>\n".encode())
            self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        self.assertEqual([kind for kind, _ in self.opened], ["integrity-check"])
        for i in range(3):
            relpath = f"etc/rules/r{i}.xml"
            self.assertEqual(md5(self.workerHome.path(relpath)), md5(self.masterHome.path(relpath)), relpath)
        self.assertEqual(self.masterIntegrity.statusOf("node02").missing, 3)

    def test_changeListsOnlyItsBucket(self) -> None:
        """
        A worker whose files are not those of a generation the master
        remembers lists the one bucket that holds the change, and gets it.
        """
        from wazuhcluster.sync.digest import bucketOf

        self.syncedWorker()
        generation = self.masterIntegrity.generation
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.assertEqual(self.masterIntegrity.generation, generation + 1)
        self.masterIntegrity.changes.clear()
        self.sync()
        kinds = [kind for kind, _ in self.opened]
        self.assertEqual(kinds, ["integrity-check", "integrity-manifest"])
        self.assertEqual(json.loads(self.opened[1][1]), {"buckets": [bucketOf("etc/rules/local_rules.xml")]})
        self.assertEqual(md5(self.workerHome.path("etc/rules/local_rules.xml")),
                         md5(self.masterHome.path("etc/rules/local_rules.xml")))
        self.assertEqual(self.worker.generation, generation + 1)

    def test_driftAndChangeTogether(self) -> None:
        """
        A file edited on the worker while the master changed another: the
        worker's digest is no generation the master had, so it lists what
        differs, and both files end as the master's.
        """
        self.syncedWorker()
        write(self.workerHome, "etc/lists/blacklist", b"tampered:\n")
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        self.assertEqual([kind for kind, _ in self.opened], ["integrity-check", "integrity-manifest"])
        for relpath in ("etc/lists/blacklist", "etc/rules/local_rules.xml"):
            self.assertEqual(md5(self.workerHome.path(relpath)), md5(self.masterHome.path(relpath)), relpath)

    def test_driftOnTheWorkerIsRepaired(self) -> None:
        """A file edited, and one deleted, on the worker are found by its own digest and restored."""
        self.syncedWorker()
        write(self.workerHome, "etc/lists/blacklist", b"tampered:\n")
        os.unlink(self.workerHome.path("etc/shared/g150/agent.conf"))
        self.sync()
        for relpath in ("etc/lists/blacklist", "etc/shared/g150/agent.conf"):
            self.assertEqual(md5(self.workerHome.path(relpath)), md5(self.masterHome.path(relpath)), relpath)
        status = self.masterIntegrity.statusOf("node02")
        self.assertEqual((status.missing, status.shared), (1, 1))

    def test_pushedChangeNeedsNoWalk(self) -> None:
        """
        When the master says its files changed, the worker checks from its
        last scan, updated with the files the transfer put in place: no walk
        of its 300 files, and the next push check is in sync at once.
        """
        self.syncedWorker()
        walks: list[object] = []
        rescans: list[object] = []
        scan, rescan = self.worker.scanner.scan, self.worker.scanner.rescan
        self.patch(self.worker.scanner, "scan", lambda: (walks.append(1), scan())[1])
        self.patch(self.worker.scanner, "rescan", lambda r, p: (rescans.append(list(p)), rescan(r, p))[1])
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>pushed</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        d = self.worker._cycle()  # what masterChanged runs
        for _ in range(60):
            self.net.flush()
            self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(md5(self.workerHome.path("etc/rules/local_rules.xml")),
                         md5(self.masterHome.path("etc/rules/local_rules.xml")))
        self.assertEqual((walks, rescans), ([], [["etc/rules/local_rules.xml"]]))
        del self.opened[:]
        d = self.worker._cycle()
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual([kind for kind, _ in self.opened], ["integrity-check"])
        self.assertEqual(walks, [])
        # The timed check walks: the safety net for the worker's own edits.
        self.sync()
        self.assertEqual(walks, [1])

    def test_busyMasterAskedAgainShortly(self) -> None:
        """
        A check the master answers "busy" (this worker's previous transfer is
        still closing there) is tried again after BUSY_RETRY seconds, not a
        whole cycle later.
        """
        from wazuhcluster.worker.integrity import BUSY_RETRY

        self.syncedWorker()
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>later</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        status = self.masterIntegrity.statusOf("node02")
        status.running = True
        d = self.worker._cycle()
        self.net.flush()
        self.successResultOf(d)
        self.assertAlmostEqual(self.worker._next.getTime() - self.clock.seconds(), BUSY_RETRY)
        status.running = False
        self.clock.advance(BUSY_RETRY)
        for _ in range(60):
            self.net.flush()
            self.clock.advance(0)
        self.assertEqual(md5(self.workerHome.path("etc/rules/local_rules.xml")),
                         md5(self.masterHome.path("etc/rules/local_rules.xml")))

    def test_agentFilesCheckedOnlyWhenClientKeysChanged(self) -> None:
        """
        The worker looks for the files of removed agents (a read of
        client.keys and of every agent's files) only when a transfer brought
        client.keys, not for every edited rule.
        """
        self.syncedWorker()
        calls: list[object] = []
        original = self.worker._removeFilesOfUnregisteredAgents
        self.patch(self.worker, "_removeFilesOfUnregisteredAgents", lambda: (calls.append(1), original())[1])
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        self.assertEqual(calls, [])
        write(self.masterHome, "etc/client.keys", f"001 web 10.0.0.5 {KEY}\n".encode())
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        self.assertEqual(calls, [1])

    def test_manifestOfOtherBucketsIgnored(self) -> None:
        """
        Entries outside the buckets a manifest's opening names are not the
        worker's to list: nothing is deleted or sent for them.
        """
        from wazuhcluster.sync.digest import bucketOf
        from wazuhcluster.sync.manifest import FileEntry, encodeManifest

        self.syncedWorker()
        bucket = bucketOf("etc/client.keys")
        other = next(f"etc/rules/x{i}.xml" for i in range(1000) if bucketOf(f"etc/rules/x{i}.xml") != bucket)
        manifest = {other: FileEntry("0" * 32, 1.0, 1)}
        sent = Deferred.fromCoroutine(self.connection.client.streams.send(
            "integrity-manifest", json.dumps({"buckets": [bucket]}), chunksOf(encodeManifest(manifest)),
            timeout=FAST.timeout_receiving_file,
        ))
        self.net.flush()
        answer = json.loads(self.successResultOf(sent))
        # The master's files of that bucket are missing from this manifest; the other path is left alone.
        inBucket = [p for p in self.masterIntegrity.current.files if bucketOf(p) == bucket]
        self.assertEqual((answer["missing"], answer["extra"]), (len(inBucket), 0))

    def test_manifestCapFollowsTheMasterTable(self) -> None:
        """A manifest longer than twice the master's files (plus the slack) is refused."""
        from wazuhcluster.master import integrity as masterintegrity
        from wazuhcluster.sync.manifest import FileEntry, encodeManifest

        self.syncedWorker()
        self.patch(masterintegrity, "MANIFEST_SLACK", 10)
        ours = len(self.masterIntegrity.current.files)
        manifest = {f"etc/rules/r{i}.xml": FileEntry("0" * 32, 1.0, 1) for i in range(2 * ours + 11)}
        sent = Deferred.fromCoroutine(self.connection.client.streams.send(
            "integrity-manifest", "", chunksOf(encodeManifest(manifest)), timeout=FAST.timeout_receiving_file,
        ))
        self.net.flush()
        self.assertIn(f"more than the {2 * ours + 10} files allowed", str(self.failureResultOf(sent).value))

    def test_bundleBuiltOnceForTheSameDelta(self) -> None:
        """Two workers needing the same files get the same bundle, built once."""
        self.syncedWorker()
        built = self.masterIntegrity.bundles.built
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        other = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(other.path("etc"))
        second = WorkerIntegrity(other, self.table, FAST, self.clock, "node03", runInThread=inline)
        connection, joined = self.net.joinWorker(self.master, settings("node03"), sinksFor=second.sinksFor)
        self.successResultOf(joined)
        second.connectionToMaster = lambda: connection.client
        # node03 is a fresh worker: a different delta (everything), built once more.
        d = second._timedCycle()
        for _ in range(60):
            self.net.flush()
            self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.masterIntegrity.bundles.built, built + 2)
        # The same edit again for node02: nothing new to build.
        write(self.workerHome, "etc/rules/local_rules.xml", b"<group name='local'>old</group>\n")
        self.sync()
        self.assertEqual(self.masterIntegrity.bundles.built, built + 2)
        self.assertEqual(md5(self.workerHome.path("etc/rules/local_rules.xml")),
                         md5(self.masterHome.path("etc/rules/local_rules.xml")))

    def test_bundlesOfOldGenerationsDropped(self) -> None:
        """
        Bundles are anonymous files (nothing left in queue/cluster by a
        killed master); a new generation drops the older ones.
        """
        self.syncedWorker()
        self.assertEqual(os.listdir(self.masterHome.path("queue", "cluster")), [])
        self.assertEqual(len(self.masterIntegrity.bundles._bundles), 1)
        first = next(iter(self.masterIntegrity.bundles._bundles.values()))
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>edited</group>\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.sync()
        (kept,) = self.masterIntegrity.bundles._bundles.values()
        self.assertIsNot(kept, first)
        self.assertEqual(kept.files, 1)

    def test_unrequestedOrInvalidGroupFilesRefused(self) -> None:
        """
        Group files the master did not ask for, or whose content is not a
        list of group names, are not written on the master.
        """
        self.masterFiles()
        write(self.masterHome, "etc/client.keys",
              f"001 web any {KEY}\n002 db any {KEY}\n003 x any {KEY}\n".encode())
        write(self.workerHome, "queue/agent-groups/002", b"../../x\n")
        write(self.workerHome, "queue/agent-groups/003", b"web,db\n")
        self.successResultOf(self.masterIntegrity.recalculate())
        self.join()
        self.sync()
        self.net.flush()
        self.assertFalse(os.path.exists(self.masterHome.path("queue/agent-groups/002")))
        with open(self.masterHome.path("queue/agent-groups/003"), "rb") as f:
            self.assertEqual(f.read(), b"web,db\n")
        # Sent again unasked: refused.
        writer = BundleWriter([("queue/agent-groups/001", self.workerHome.path("queue/agent-groups/003"))], [])
        sent = Deferred.fromCoroutine(self.connection.client.streams.send(
            "extra-valid", "{}", chunksOf(writer.chunks()), timeout=FAST.timeout_receiving_file,
        ))
        self.net.flush()
        result = json.loads(self.successResultOf(sent))
        self.assertEqual((result["written"], result["refusedCount"]), (0, 1))
        with open(self.masterHome.path("queue/agent-groups/001"), "rb") as f:
            self.assertEqual(f.read(), b"default\n")

    def test_changeDuringScanNotLost(self) -> None:
        """
        A change seen while a scan runs (which may have walked past the file)
        gets a pass of its own after it: the result has the change.
        """
        self.masterFiles()
        self.successResultOf(self.masterIntegrity.recalculate())
        held: list[tuple[Deferred, object, tuple]] = []

        def heldThread(f, *args):
            d: Deferred = Deferred()
            held.append((d, f, args))
            return d

        self.masterIntegrity.runInThread = heldThread
        first = self.masterIntegrity.recalculate()
        # The scan ran before the edit...
        d, f, args = held.pop()
        result = f(*args)
        write(self.masterHome, "etc/rules/local_rules.xml", b"<group name='local'>during</group>\n")
        second = self.masterIntegrity.recalculate({"etc/rules/local_rules.xml"})
        self.assertNoResult(second)
        d.callback(result)
        self.successResultOf(first)
        # ...so a pass of the named path follows it at once.
        self.assertNoResult(second)
        d, f, args = held.pop()
        self.assertEqual(args[1], {"etc/rules/local_rules.xml"})  # the named path, not a walk
        d.callback(f(*args))
        after = self.successResultOf(second)
        self.assertEqual(after.files["etc/rules/local_rules.xml"].md5,
                         hashlib.md5(b"<group name='local'>during</group>\n").hexdigest())


class ScheduleTests(SynchronousTestCase):
    """When a worker checks its files."""

    def setUp(self) -> None:
        self.clock = Clock()
        home = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(home.path("etc"))
        self.cycles: list[float] = []
        self.worker = WorkerIntegrity(home, SyncTable.load(), FAST, self.clock, "node02",
                                      runInThread=inline, jitter=lambda: 1.0)
        self.worker.sync = self.recordCycle  # type: ignore[method-assign]
        self.worker.startService()
        self.addCleanup(self.worker.stopService)

    async def recordCycle(self) -> None:
        self.cycles.append(self.clock.seconds())
        self.worker._schedule()

    def test_joinSyncsAtOnce(self) -> None:
        self.worker.syncSoon()
        self.clock.advance(0)
        self.assertEqual(self.cycles, [0])

    def test_cyclesAreJittered(self) -> None:
        """With the largest jitter a cycle comes at 1.1 intervals; the next as long after it."""
        interval = FAST.sync_integrity
        self.clock.advance(interval * 1.1 - 0.001)
        self.assertEqual(self.cycles, [])
        self.clock.advance(0.001)
        self.clock.advance(interval * 1.1)
        self.assertEqual(self.cycles, [interval * 1.1, interval * 2.2])
        # After a cycle the next is drawn again: the workers drift apart.
        self.worker.jitter = lambda: 0.0
        self.clock.advance(interval * 1.1)
        self.clock.advance(interval * 0.9)
        self.assertEqual(self.cycles[3], interval * 4.2)


class ManifestOfBucketsTests(SynchronousTestCase):
    def test_only_the_named_buckets_entries_are_made(self) -> None:
        """
        A pushed check lists one bucket of 50,000 files: only that bucket's
        entries are made from the scan's records (making all of them took
        90 ms per check and worker, and doubled edit propagation).
        """
        from collections.abc import Mapping

        from wazuhcluster.sync.digest import bucketOf
        from wazuhcluster.sync.manifest import FileEntry
        from wazuhcluster.worker.integrity import _manifestPieces

        made: list[str] = []

        class Files(Mapping):
            paths = [f"queue/agent-groups/{i:05d}" for i in range(2000)]

            def __getitem__(self, path: str) -> FileEntry:
                made.append(path)
                return FileEntry("0" * 32, 1.0, 8)

            def __iter__(self):
                return iter(self.paths)

            def __len__(self) -> int:
                return len(self.paths)

        wanted = frozenset({bucketOf(Files.paths[0])})
        pieces = _manifestPieces(Files(), wanted)
        inBucket = [p for p in Files.paths if bucketOf(p) in wanted]
        self.assertEqual(sorted(made), sorted(inBucket))
        self.assertLess(len(made), 100)
        self.assertIn(Files.paths[0].encode(), b"".join(pieces))
