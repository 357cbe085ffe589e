"""
Tests for L{wazuhcluster.sync.changelog} and L{ScanFiles.changedSince}: what
the master remembers of its recent generations, scanned from real files.
"""

from __future__ import annotations

import os
import random

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.master.integrity import _compareChanged
from wazuhcluster.sync.changelog import ChangeLog
from wazuhcluster.sync.compare import compare
from wazuhcluster.sync.digest import TreeDigest
from wazuhcluster.sync.scan import IntegrityScanner, ScanResult
from wazuhcluster.sync.table import SyncTable

TABLE = SyncTable.load()


class ChangeLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.home, "etc"))
        self.scanner = IntegrityScanner(self.home, TABLE)

    def write(self, relpath: str, data: bytes) -> None:
        path = os.path.join(self.home, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def remove(self, relpath: str) -> None:
        os.unlink(os.path.join(self.home, relpath))

    def step(self, log: ChangeLog, before: ScanResult) -> ScanResult:
        """Scan again, and log the change from C{before} as the master does."""
        after = self.scanner.scan()
        changed = after.files.changedSince(before.files, before.digest.differing(after.digest))
        log.record(before, changed)
        return after

    def test_changedSinceNamesAddedRemovedAndRewritten(self) -> None:
        """Only files added, removed or with another content are named; a touched file is not."""
        for i in range(50):
            self.write(f"etc/rules/r{i:02d}.xml", f"<group name='r{i}'/>\n".encode())
        before = self.scanner.scan()
        self.write("etc/rules/r03.xml", b"<group name='edited'/>\n")
        self.write("etc/rules/new.xml", b"<group name='new'/>\n")
        self.remove("etc/rules/r07.xml")
        os.utime(os.path.join(self.home, "etc/rules/r09.xml"), (1, 1))  # same content
        after = self.scanner.scan()
        changed = after.files.changedSince(before.files, before.digest.differing(after.digest))
        self.assertEqual(sorted(changed), ["etc/rules/new.xml", "etc/rules/r03.xml", "etc/rules/r07.xml"])
        self.assertEqual(after.files.changedSince(after.files, range(256)), [])

    def test_sinceGivesTheEntriesOfThatGeneration(self) -> None:
        """
        Files at a remembered digest: every path changed since, with the
        entry those files held (None where they had none), over several
        changes.
        """
        log = ChangeLog()
        self.write("etc/rules/a.xml", b"a1")
        self.write("etc/rules/b.xml", b"b1")
        first = self.scanner.scan()
        self.write("etc/rules/a.xml", b"a2")
        second = self.step(log, first)
        self.write("etc/rules/a.xml", b"a3")
        self.write("etc/rules/c.xml", b"c1")
        self.remove("etc/rules/b.xml")
        third = self.step(log, second)
        held = log.since(first.digest)
        self.assertEqual(set(held), {"etc/rules/a.xml", "etc/rules/b.xml", "etc/rules/c.xml"})
        self.assertEqual(held["etc/rules/a.xml"], first.files["etc/rules/a.xml"])
        self.assertEqual(held["etc/rules/b.xml"], first.files["etc/rules/b.xml"])
        self.assertIsNone(held["etc/rules/c.xml"])
        self.assertEqual(set(log.since(second.digest)), {"etc/rules/a.xml", "etc/rules/b.xml", "etc/rules/c.xml"})
        self.assertEqual(log.since(second.digest)["etc/rules/a.xml"], second.files["etc/rules/a.xml"])
        # The current files, and files the master never had, are no remembered generation.
        self.assertIsNone(log.since(third.digest))
        self.assertIsNone(log.since(TreeDigest()))

    def test_bounded(self) -> None:
        """At most maxGenerations changes and maxPaths paths; a bigger change empties the log."""
        log = ChangeLog(maxGenerations=3, maxPaths=5)
        self.write("etc/rules/x.xml", b"0")
        results = [self.scanner.scan()]
        for i in range(1, 5):
            self.write("etc/rules/x.xml", str(i).encode())
            results.append(self.step(log, results[-1]))
        self.assertEqual(len(log), 3)
        self.assertIsNone(log.since(results[0].digest))
        self.assertEqual(set(log.since(results[1].digest)), {"etc/rules/x.xml"})
        for i in range(4):
            self.write(f"etc/rules/y{i}.xml", b"y")
        results.append(self.step(log, results[-1]))  # 4 paths: 1 + 1 + 4 > 5
        self.assertIsNone(log.since(results[2].digest))
        self.assertIsNotNone(log.since(results[4].digest))
        for i in range(6):
            self.write(f"etc/rules/z{i}.xml", b"z")
        self.step(log, results[-1])  # 6 paths: more than the whole log holds
        self.assertEqual(len(log), 0)

    def test_deltaComparisonEqualsTheFullOne(self) -> None:
        """
        For random changes over several generations (rules, group files of
        an "extra valid" rule, files removed and re-added), comparing only
        the paths changed since a worker's generation gives exactly what
        comparing every file gives.
        """
        rng = random.Random(11)
        names = [f"etc/rules/r{i:03d}.xml" for i in range(60)] + [f"queue/agent-groups/{i:03d}" for i in range(40)]
        for name in names[::2]:
            self.write(name, b"start\n")
        log = ChangeLog()
        generations = [self.scanner.scan()]
        for round_ in range(6):
            for name in rng.sample(names, 12):
                if os.path.exists(os.path.join(self.home, name)) and rng.random() < 0.4:
                    self.remove(name)
                else:
                    self.write(name, f"round {round_} {rng.random()}\n".encode())
            generations.append(self.step(log, generations[-1]))
        current = generations[-1]
        for worker in generations[:-1]:
            held = log.since(worker.digest)
            self.assertIsNotNone(held)
            self.assertEqual(
                _compareChanged(held, current, TABLE),
                compare(current.files, worker.files, TABLE, current.unstable),
            )
