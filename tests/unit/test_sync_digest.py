"""
Tests for L{wazuhcluster.sync.digest} and for the digests and path-by-path
rescans of L{wazuhcluster.sync.scan.IntegrityScanner}: real files in
temporary homes.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.sync.digest import BUCKETS, DigestError, TreeDigest, bucketOf, leafOf
from wazuhcluster.sync.manifest import FileEntry

from .test_sync_scan import NOT_SYNCHRONISED, SYNCHRONISED, ScanTestCase


class TreeDigestTests(SynchronousTestCase):
    """The digest of a manifest."""

    files = {f"etc/rules/r{i}.xml": FileEntry(f"{i:032x}", 1.0, 1) for i in range(1000)}

    def test_order_does_not_matter(self) -> None:
        backwards = dict(reversed(list(self.files.items())))
        self.assertEqual(TreeDigest.ofFiles(backwards).root, TreeDigest.ofFiles(self.files).root)

    def test_one_change_one_bucket(self) -> None:
        """A changed, added or removed file changes its own bucket and the root, nothing else."""
        before = TreeDigest.ofFiles(self.files)
        for path, changed in (
            ("etc/rules/r7.xml", {**self.files, "etc/rules/r7.xml": FileEntry("f" * 32, 1.0, 1)}),
            ("etc/rules/new.xml", {**self.files, "etc/rules/new.xml": FileEntry("0" * 32, 1.0, 1)}),
            ("etc/rules/r7.xml", {p: e for p, e in self.files.items() if p != "etc/rules/r7.xml"}),
        ):
            after = TreeDigest.ofFiles(changed)
            self.assertEqual(after.differing(before), [bucketOf(path)])
            self.assertNotEqual(after.root, before.root)

    def test_mtime_and_size_do_not_count(self) -> None:
        """Equal contents are equal files, as the MD5 comparison says."""
        touched = {p: FileEntry(e.md5, 2.0, e.size) for p, e in self.files.items()}
        self.assertEqual(TreeDigest.ofFiles(touched), TreeDigest.ofFiles(self.files))

    def test_path_matters(self) -> None:
        """A file moved to another name is a different tree, even with the same content."""
        self.assertNotEqual(leafOf("etc/rules/a.xml", "0" * 32), leafOf("etc/rules/b.xml", "0" * 32))

    def test_buckets_spread(self) -> None:
        used = {bucketOf(p) for p in self.files}
        self.assertGreater(len(used), BUCKETS * 0.9)

    def test_encode_decode(self) -> None:
        digest = TreeDigest.ofFiles(self.files)
        self.assertEqual(len(digest.encode()), 4096)
        self.assertEqual(TreeDigest.decode(digest.encode()), digest)

    def test_decode_refuses_wrong_size(self) -> None:
        for data in (b"", b"\0" * 4095, b"\0" * 4097):
            with self.assertRaises(DigestError):
                TreeDigest.decode(data)


class ScanDigestTests(ScanTestCase):
    """A scan's digest is that of the files it found, however they were found."""

    def assertDigestOfFiles(self, result: object) -> None:
        self.assertEqual(result.digest, TreeDigest.ofFiles(result.files))  # type: ignore[attr-defined]

    def test_first_and_cached_scans(self) -> None:
        home = self.home()
        scanner = self.scanner(home)
        first = scanner.scan()
        second = scanner.scan()
        self.assertEqual(second.reused, len(SYNCHRONISED))
        self.assertDigestOfFiles(first)
        self.assertEqual(second.digest, first.digest)

    def test_two_homes_same_files_same_root(self) -> None:
        one = self.scanner(self.home()).scan()
        other = self.scanner(self.home(dict(SYNCHRONISED))).scan()
        self.assertEqual(one.digest.root, other.digest.root)


class RescanTests(ScanTestCase):
    """L{IntegrityScanner.rescan} agrees with a full scan, looking only at the paths named."""

    def setUp(self) -> None:
        self.homePath = self.home()
        self.scan = self.scanner(self.homePath)
        self.before = self.scan.scan()

    def assertSameAsFullScan(self, rescanned: object) -> None:
        full = self.scanner(self.homePath).scan()
        self.assertEqual(dict(rescanned.files), dict(full.files))  # type: ignore[attr-defined]
        self.assertEqual(rescanned.digest, full.digest)  # type: ignore[attr-defined]

    def test_changed_added_removed(self) -> None:
        self.write(self.homePath, "etc/rules/local_rules.xml", b"<group name='changed'/>\n")
        self.write(self.homePath, "etc/lists/new-list", b"a:b\n")
        os.unlink(os.path.join(self.homePath, "queue/agent-groups/001"))
        after = self.scan.rescan(
            self.before, ["etc/rules/local_rules.xml", "etc/lists/new-list", "queue/agent-groups/001"]
        )
        self.assertEqual(after.hashed, 2)
        self.assertEqual(after.reused, 0)
        self.assertNotIn("queue/agent-groups/001", after.files)
        self.assertSameAsFullScan(after)
        # The previous result is untouched.
        self.assertIn("queue/agent-groups/001", self.before.files)

    def test_not_synchronised_paths_skipped(self) -> None:
        """Excluded names, paths outside the table and unsafe names change nothing."""
        for relpath in NOT_SYNCHRONISED:
            self.write(self.homePath, relpath, b"changed")
        after = self.scan.rescan(self.before, list(NOT_SYNCHRONISED) + ["../escape", "/etc/passwd", ""])
        self.assertEqual(dict(after.files), dict(self.before.files))
        self.assertEqual(after.digest, self.before.digest)

    def test_symlinked_folder_not_followed(self) -> None:
        """A file reached through a link to a folder is not synchronised, as the walk says."""
        outside = self.folder()
        self.write(outside, "secret.xml", b"<secret/>")
        os.symlink(outside, os.path.join(self.homePath, "etc/rules/linked"))
        after = self.scan.rescan(self.before, ["etc/rules/linked/secret.xml"])
        self.assertNotIn("etc/rules/linked/secret.xml", after.files)
        self.assertSameAsFullScan(after)

    def test_rescan_then_full_scan_reuses(self) -> None:
        """What a rescan hashed, the next full walk takes from the cache."""
        self.write(self.homePath, "etc/rules/local_rules.xml", b"<group name='changed'/>\n")
        self.scan.rescan(self.before, ["etc/rules/local_rules.xml"])
        full = self.scan.scan()
        self.assertEqual(full.hashed, 0)
        self.assertEqual(full.reused, len(SYNCHRONISED))
