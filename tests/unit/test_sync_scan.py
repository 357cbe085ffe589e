"""
Tests for L{wazuhcluster.sync.scan}: finding the synchronised files of a
Wazuh home and their MD5s, re-hashing only what changed.

Every test scans real files in C{self.mktemp()} folders.  Files that change
while hashed are simulated by a scanner whose hashing step changes the file
first, or by a read that changes it between two blocks: no sleeping.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.sync import scan as scanModule
from wazuhcluster.sync.manifest import FileEntry
from wazuhcluster.sync.scan import RACY_WINDOW_NS, IntegrityScanner, ScanResult
from wazuhcluster.sync.table import SyncRule, SyncTable

TABLE = SyncTable.load()

RULESET = "/work/shared/corpus/wazuh-ruleset"

# Files the scan must find: one or more in every rule.
SYNCHRONISED = {
    "etc/client.keys": b"001 agent1 any 0123456789abcdef\n",
    "etc/shared/default/agent.conf": b"<agent_config/>\n",
    "etc/shared/default/merged.mg": b"#default\n",
    "etc/shared/a/b/c.txt": b"deep",
    "etc/shared/empty": b"",
    "var/multigroups/x/merged.mg": b"#x\n",
    "var/multigroups/merged.mg": b"#top\n",
    "etc/rules/local_rules.xml": b"<group name='local'/>\n",
    "etc/rules/sub/more_rules.xml": b"<group name='more'/>\n",
    "etc/decoders/local_decoder.xml": b"<decoder name='local'/>\n",
    "etc/lists/audit-keys": b"audit-wazuh-w:write\n",
    "etc/lists/amazon/aws-sources": b"cloudtrail:\n",
    "queue/agent-groups/001": b"default\n",
}

# Files the scan must not find: excluded names and endings, our temporary
# files, other names in name-filtered folders, and folders outside the table.
NOT_SYNCHRONISED = {
    "etc/ossec.conf": b"<ossec_config/>",
    "etc/internal_options.conf": b"x=1",
    "etc/client.keys.bak": b"old",
    "etc/sub/client.keys": b"not directly in etc/",
    "etc/shared/default/ar.conf": b"restart-ossec0",
    "etc/shared/old.tmp/agent.conf": b"in an excluded folder",
    "var/multigroups/x/other": b"not merged.mg",
    "etc/rules/local_rules.xml~": b"backup",
    "etc/rules/.local_rules.xml.swp": b"vim",
    "etc/decoders/d.xml.lock": b"lock",
    "etc/lists/l.tmp": b"tmp",
    "etc/rules/.wazuhcluster-123.tmp": b"ours",
    "etc/rules/.wazuhcluster-456": b"ours",
    "etc/shared/.wazuhcluster-dir/agent.conf": b"ours",
    "queue/agent-info/x": b"agent info",
    "logs/cluster.log": b"log",
    "etc/client.keys~": b"editor backup",
}


def later() -> int:
    """A clock an hour ahead: no file counts as just changed, so all are cached."""
    return time.time_ns() + 3600 * 10**9


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class ScanTestCase(SynchronousTestCase):
    """Helpers to build Wazuh homes and scan them."""

    def folder(self) -> str:
        """A new empty folder, removed after the test."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        return path

    def write(self, home: str, relpath: str, data: bytes) -> str:
        """Write C{data} at C{relpath} under C{home}; return the absolute path."""
        path = os.path.join(home, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def home(self, files: dict[str, bytes] | None = None) -> str:
        """A home holding C{files} (by default every synchronised and excluded file above)."""
        home = self.folder()
        if files is None:
            files = {**SYNCHRONISED, **NOT_SYNCHRONISED}
        for relpath, data in files.items():
            self.write(home, relpath, data)
        return home

    def scanner(self, home: str, now: Callable[[], int] = later, **kwargs: object) -> IntegrityScanner:
        return IntegrityScanner(home, TABLE, now=now, **kwargs)  # type: ignore[arg-type]

    def assertFiles(self, home: str, result: ScanResult, expected: dict[str, bytes]) -> None:
        """C{result} lists exactly C{expected}, with hashlib's MD5s and the disk's times and sizes."""
        self.assertEqual(sorted(result.files), sorted(expected))
        for relpath, data in expected.items():
            st = os.stat(os.path.join(home, relpath))
            self.assertEqual(
                result.files[relpath], FileEntry(md5(data), st.st_mtime_ns / 1e9, len(data)), relpath
            )


class ScanTests(ScanTestCase):
    """What a scan finds."""

    def test_exact_set(self) -> None:
        """Every synchronised file, with its MD5, mtime and size, and nothing else."""
        home = self.home()
        result = self.scanner(home).scan()
        self.assertFiles(home, result, SYNCHRONISED)
        self.assertEqual(result.unstable, frozenset())
        self.assertEqual(result.unreadable, frozenset())
        self.assertEqual(result.refused, frozenset())
        self.assertEqual(result.hashed, len(SYNCHRONISED))
        self.assertEqual(result.reused, 0)
        self.assertEqual(result.bytesHashed, sum(len(d) for d in SYNCHRONISED.values()))

    def test_agrees_with_table(self) -> None:
        """Each file found is one the table accepts from a peer, under the rule it was found by."""
        home = self.home()
        for relpath in self.scanner(home).scan().files:
            self.assertTrue(relpath.startswith(TABLE.validate(relpath).folder))

    def test_mtime_precision(self) -> None:
        """The modification time keeps the disk's nanoseconds as far as a float can."""
        home = self.home({"etc/rules/r.xml": b"x"})
        os.utime(os.path.join(home, "etc/rules/r.xml"), ns=(0, 1_700_000_000_123_456_789))
        entry = self.scanner(home).scan().files["etc/rules/r.xml"]
        self.assertEqual(entry.mtime, 1_700_000_000_123_456_789 / 1e9)

    def test_times_beyond_64_bits_of_nanoseconds(self) -> None:
        """
        A file dated before 1678 or after 2261 (as far as the file system
        keeps it) is listed with its time, and reused by the next walk.
        """
        files = {"etc/rules/late.xml": b"late", "etc/rules/early.xml": b"early", "etc/rules/now.xml": b"now"}
        home = self.home(files)
        for relpath, ns in (("etc/rules/late.xml", 2**63 + 10**18), ("etc/rules/early.xml", -(2**63) - 10**18)):
            try:
                os.utime(os.path.join(home, relpath), ns=(0, ns))
            except (OSError, OverflowError):
                pass  # not on this file system: the time it keeps is checked all the same
        scanner = self.scanner(home)
        first = scanner.scan()
        self.assertFiles(home, first, files)
        for relpath in files:
            self.assertEqual(first.files[relpath].mtime, os.lstat(os.path.join(home, relpath)).st_mtime_ns / 1e9)
        second = scanner.scan()
        self.assertEqual((second.hashed, second.reused), (0, len(files)))
        self.assertEqual(dict(second.files), dict(first.files))
        self.assertEqual(second.digest, first.digest)

    def test_missing_home(self) -> None:
        """A home without any of the folders scans to nothing."""
        result = self.scanner(self.folder()).scan()
        self.assertEqual(dict(result.files), {})
        self.assertEqual(result.unstable, frozenset())

    def test_result_is_read_only(self) -> None:
        """The files of a result cannot be changed by whoever it is handed to."""
        files = self.scanner(self.home()).scan().files

        def change() -> None:
            files["etc/rules/x"] = FileEntry(md5(b""), 0.0, 0)  # type: ignore[index]

        self.assertRaises(TypeError, change)

    def test_files_as_a_mapping(self) -> None:
        """The files read as a mapping of entries: lookups, misses, subsets, equality with a dict."""
        home = self.home()
        files = self.scanner(home).scan().files
        entry = files["etc/rules/local_rules.xml"]
        self.assertEqual(entry, FileEntry(md5(SYNCHRONISED["etc/rules/local_rules.xml"]), entry.mtime,
                                          len(SYNCHRONISED["etc/rules/local_rules.xml"])))
        self.assertEqual(files.get("etc/rules/local_rules.xml"), entry)
        self.assertIsNone(files.get("etc/rules/missing.xml"))
        self.assertNotIn("etc/rules/missing.xml", files)
        self.assertRaises(KeyError, lambda: files["etc/rules/missing.xml"])
        self.assertEqual(files, dict(files.items()))
        some = ["etc/client.keys", "queue/agent-groups/001"]
        self.assertEqual(dict(files.subset(some)), {p: files[p] for p in some})
        self.assertEqual(len(files.subset([])), 0)

    def test_large_file_in_blocks(self) -> None:
        """A file many blocks long is hashed in blocks, completely."""
        data = os.urandom(10_000) + b"tail"
        home = self.home({"etc/lists/big": data, "etc/lists/small": b"s"})
        result = self.scanner(home, blockSize=1000).scan()
        self.assertFiles(home, result, {"etc/lists/big": data, "etc/lists/small": b"s"})
        self.assertEqual(result.bytesHashed, len(data) + 1)

    def test_block_size_checked(self) -> None:
        self.assertRaises(ValueError, IntegrityScanner, self.folder(), TABLE, blockSize=0)

    def test_nested_rule_folders(self) -> None:
        """A recursive rule does not walk into a sub-folder that has its own rule."""
        table = SyncTable(
            (
                SyncRule("a/", None, True, 0o660, False, False),
                SyncRule("a/b/", ("x",), True, 0o660, False, False),
            ),
            frozenset(),
            (),
        )
        home = self.home({"a/b/x": b"1", "a/b/y": b"2", "a/b/c/x": b"3", "a/c/y": b"4", "a/y": b"5"})
        result = IntegrityScanner(home, table, now=later).scan()
        self.assertEqual(sorted(result.files), ["a/b/c/x", "a/b/x", "a/c/y", "a/y"])
        for relpath in result.files:
            self.assertIsNotNone(table.ruleFor(relpath))

    def test_not_utf8_name(self) -> None:
        """A file whose name is not UTF-8 cannot cross the wire: refused, not listed."""
        home = self.home({"etc/rules/good.xml": b"g"})
        with open(os.path.join(os.fsencode(home), b"etc/rules/bad\xff.xml"), "wb") as f:
            f.write(b"b")
        os.makedirs(os.path.join(os.fsencode(home), b"etc/shared/g\xfe"))
        with open(os.path.join(os.fsencode(home), b"etc/shared/g\xfe/agent.conf"), "wb") as f:
            f.write(b"c")
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), ["etc/rules/good.xml"])
        self.assertEqual(result.refused, frozenset({"etc/rules/bad\udcff.xml", "etc/shared/g\udcfe"}))


class LinkAndSpecialFileTests(ScanTestCase):
    """Symbolic links are never followed; only regular files are read."""

    def test_symlinked_files_skipped(self) -> None:
        home = self.home({"etc/rules/real.xml": b"real"})
        secret = self.write(self.folder(), "passwd", b"root:x:0:0")
        os.symlink(secret, os.path.join(home, "etc/rules/outside.xml"))
        os.symlink("real.xml", os.path.join(home, "etc/rules/alias.xml"))
        os.symlink("missing.xml", os.path.join(home, "etc/rules/dangling.xml"))
        os.symlink(secret, os.path.join(home, "etc/client.keys"))
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), ["etc/rules/real.xml"])
        self.assertEqual(result.hashed, 1)

    def test_symlinked_folders_skipped(self) -> None:
        home = self.home({"etc/shared/default/agent.conf": b"a"})
        outside = self.folder()
        self.write(outside, "agent.conf", b"outside")
        os.symlink(outside, os.path.join(home, "etc/shared/evil"))
        os.symlink("default", os.path.join(home, "etc/shared/alias"))
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), ["etc/shared/default/agent.conf"])

    def test_rule_folder_linked_outside(self) -> None:
        """A rule folder that is a link out of the home is not read, and is held for the round."""
        home = self.home({"etc/decoders/d.xml": b"d"})
        outside = self.folder()
        self.write(outside, "r.xml", b"outside")
        os.symlink(outside, os.path.join(home, "etc/rules"))
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), ["etc/decoders/d.xml"])
        self.assertEqual(result.refused, frozenset({"etc/rules/"}))
        self.assertEqual(result.unstable, frozenset({"etc/rules/"}))

    def test_rule_folder_linked_inside_home(self) -> None:
        """
        A rule folder linked to a folder inside the home is not walked (a
        link to api/configuration would send the API's users to every
        worker): held and refused, as the writer refuses it.
        """
        home = self.home({"api/configuration/users.json": b"{}"})
        os.makedirs(os.path.join(home, "etc"))
        os.symlink("../api/configuration", os.path.join(home, "etc/rules"))
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), [])
        self.assertIn("etc/rules/", result.refused)
        self.assertIn("etc/rules/", result.unstable)

    def test_fifo_and_folder_named_like_files(self) -> None:
        """A fifo is skipped without blocking; a folder called client.keys is not a file."""
        home = self.home({"etc/rules/r.xml": b"r"})
        os.mkfifo(os.path.join(home, "etc/rules/fifo.xml"))
        os.makedirs(os.path.join(home, "etc/client.keys"))
        os.makedirs(os.path.join(home, "var/multigroups/merged.mg"))
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), ["etc/rules/r.xml"])


class CacheTests(ScanTestCase):
    """Only files whose status changed are hashed again."""

    def test_second_scan_reuses(self) -> None:
        home = self.home()
        scanner = self.scanner(home)
        first = scanner.scan()
        second = scanner.scan()
        self.assertEqual((second.hashed, second.bytesHashed), (0, 0))
        self.assertEqual(second.reused, len(SYNCHRONISED))
        self.assertEqual(dict(second.files), dict(first.files))
        self.assertFiles(home, second, SYNCHRONISED)

    def test_touching_one_file_rehashes_only_it(self) -> None:
        home = self.home()
        scanner = self.scanner(home)
        scanner.scan()
        path = self.write(home, "etc/rules/local_rules.xml", b"<group name='changed'/>\n")
        os.utime(path, ns=(0, 1_600_000_000 * 10**9))
        result = scanner.scan()
        self.assertEqual(result.hashed, 1)
        self.assertEqual(result.reused, len(SYNCHRONISED) - 1)
        self.assertFiles(home, result, {**SYNCHRONISED, "etc/rules/local_rules.xml": b"<group name='changed'/>\n"})

    def test_same_size_same_mtime_other_content(self) -> None:
        """A rewrite that keeps size and mtime is still seen (the change time moved)."""
        home = self.home({"etc/lists/l": b"aaaa"})
        path = os.path.join(home, "etc/lists/l")
        os.utime(path, ns=(0, 1_600_000_000 * 10**9))
        scanner = self.scanner(home)
        scanner.scan()
        self.write(home, "etc/lists/l", b"bbbb")
        os.utime(path, ns=(0, 1_600_000_000 * 10**9))
        self.assertEqual(scanner.scan().files["etc/lists/l"].md5, md5(b"bbbb"))

    def test_mtime_only(self) -> None:
        """A touch without a change of content gives the same MD5 and the new time."""
        home = self.home({"etc/lists/l": b"same"})
        scanner = self.scanner(home)
        scanner.scan()
        os.utime(os.path.join(home, "etc/lists/l"), ns=(0, 1_500_000_000 * 10**9))
        result = scanner.scan()
        self.assertEqual(result.hashed, 1)
        self.assertEqual(result.files["etc/lists/l"], FileEntry(md5(b"same"), 1_500_000_000.0, 4))

    def test_replaced_by_rename(self) -> None:
        """A file replaced by renaming another over it (a new inode) is hashed again."""
        home = self.home({"etc/lists/l": b"old!"})
        scanner = self.scanner(home)
        scanner.scan()
        new = self.write(home, "etc/lists/new.tmp", b"new!")
        st = os.stat(os.path.join(home, "etc/lists/l"))
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(new, os.path.join(home, "etc/lists/l"))
        self.assertEqual(scanner.scan().files["etc/lists/l"].md5, md5(b"new!"))

    def test_deleted_file_disappears(self) -> None:
        home = self.home()
        scanner = self.scanner(home)
        scanner.scan()
        os.unlink(os.path.join(home, "etc/client.keys"))
        shutil.rmtree(os.path.join(home, "etc/shared/a"))
        result = scanner.scan()
        expected = {k: v for k, v in SYNCHRONISED.items() if k not in ("etc/client.keys", "etc/shared/a/b/c.txt")}
        self.assertFiles(home, result, expected)
        self.assertEqual((result.hashed, result.reused), (0, len(expected)))
        # The cache forgot it: written again, it is hashed again.
        self.write(home, "etc/client.keys", b"other keys")
        result = scanner.scan()
        self.assertEqual(result.hashed, 1)
        self.assertEqual(result.files["etc/client.keys"].md5, md5(b"other keys"))

    def test_just_changed_files_hashed_again(self) -> None:
        """
        A file changed within L{RACY_WINDOW_NS} of the scan is not trusted to
        the cache: a write in the same clock tick would not change its status.
        """
        home = self.home({"etc/lists/l": b"l", "etc/lists/m": b"m"})
        ctime = os.stat(os.path.join(home, "etc/lists/l")).st_ctime_ns
        clock = [ctime + RACY_WINDOW_NS // 2]
        scanner = self.scanner(home, now=lambda: clock[0])
        self.assertEqual(scanner.scan().hashed, 2)
        self.assertEqual(scanner.scan().hashed, 2)
        clock[0] = ctime + 5 * 10**9
        self.assertEqual(scanner.scan().hashed, 2)
        result = scanner.scan()
        self.assertEqual((result.hashed, result.reused), (0, 2))

    def test_real_clock(self) -> None:
        """With the real clock, files written just now are hashed on every scan until they settle."""
        home = self.home({"etc/lists/l": b"aaaa"})
        scanner = IntegrityScanner(home, TABLE)
        self.assertEqual(scanner.scan().files["etc/lists/l"].md5, md5(b"aaaa"))
        path = self.write(home, "etc/lists/l", b"bbbb")
        self.assertEqual(scanner.scan().files["etc/lists/l"].md5, md5(b"bbbb"))
        self.assertEqual(os.stat(path).st_size, 4)


class ChangingFileTests(ScanTestCase):
    """Files that change, vanish or cannot be read while the scan runs."""

    def hookHashing(
        self, scanner: IntegrityScanner, before: Callable[[str, int], None]
    ) -> list[str]:
        """
        Make C{scanner} call C{before(path, call)} before each time it hashes
        a file (C{call} counts from 0); return the paths hashed.
        """
        original = scanner._hashFile
        calls: list[str] = []

        def hashFile(path: str, expected: os.stat_result) -> tuple[str, os.stat_result, int]:
            before(path, calls.count(path))
            calls.append(path)
            return original(path, expected)

        scanner._hashFile = hashFile  # type: ignore[method-assign]
        return calls

    def test_changes_once(self) -> None:
        """A file that changes while hashed is hashed again and listed with its new content."""
        home = self.home({"etc/lists/l": b"first", "etc/lists/m": b"m"})
        target = os.path.join(home, "etc/lists/l")

        def before(path: str, call: int) -> None:
            if path == target and call == 0:
                self.write(home, "etc/lists/l", b"second, longer")

        scanner = self.scanner(home)
        calls = self.hookHashing(scanner, before)
        result = scanner.scan()
        self.assertEqual(calls.count(target), 2)
        self.assertEqual(result.unstable, frozenset())
        self.assertFiles(home, result, {"etc/lists/l": b"second, longer", "etc/lists/m": b"m"})
        self.assertEqual(result.hashed, 2)

    def test_keeps_changing(self) -> None:
        """A file that changes on both tries is unstable: not listed, not cached."""
        home = self.home({"etc/lists/l": b"0", "etc/lists/m": b"m"})
        target = os.path.join(home, "etc/lists/l")

        def before(path: str, call: int) -> None:
            if path == target:
                with open(target, "ab") as f:
                    f.write(b"+")

        scanner = self.scanner(home)
        calls = self.hookHashing(scanner, before)
        result = scanner.scan()
        self.assertEqual(calls.count(target), 2)
        self.assertEqual(result.unstable, frozenset({"etc/lists/l"}))
        self.assertEqual(sorted(result.files), ["etc/lists/m"])
        # Settled, it is hashed again (it was not cached) and listed.
        scanner._hashFile = IntegrityScanner._hashFile.__get__(scanner)  # type: ignore[method-assign]
        result = scanner.scan()
        self.assertEqual(result.unstable, frozenset())
        self.assertEqual((result.hashed, result.reused), (1, 1))
        self.assertFiles(home, result, {"etc/lists/l": b"0++", "etc/lists/m": b"m"})

    def test_changes_between_blocks(self) -> None:
        """A write in place between two reads of the same file is noticed, and the file hashed again."""
        home = self.home({"etc/lists/l": b"0123456789" * 3})
        target = os.path.join(home, "etc/lists/l")
        realRead = os.read
        reads = [0]

        def read(fd: int, n: int) -> bytes:
            data = realRead(fd, n)
            reads[0] += 1
            if reads[0] == 1:
                with open(target, "r+b") as f:
                    f.seek(20)
                    f.write(b"X")
                os.utime(target, ns=(0, 1_600_000_000 * 10**9))
            return data

        self.patch(scanModule.os, "read", read)
        result = self.scanner(home, blockSize=4).scan()
        self.assertEqual(reads[0], 16)
        self.assertFiles(home, result, {"etc/lists/l": b"0123456789" * 2 + b"X123456789"})
        self.assertEqual(result.bytesHashed, 60)

    def test_vanishes_before_hashing(self) -> None:
        """A file deleted between the listing and the hashing is simply absent."""
        home = self.home({"etc/lists/l": b"l", "etc/lists/m": b"m"})
        target = os.path.join(home, "etc/lists/l")

        def before(path: str, call: int) -> None:
            if path == target:
                os.unlink(target)

        scanner = self.scanner(home)
        self.hookHashing(scanner, before)
        result = scanner.scan()
        self.assertFiles(home, result, {"etc/lists/m": b"m"})
        self.assertEqual(result.unstable, frozenset())

    def test_replaced_by_link_before_hashing(self) -> None:
        """A file swapped for a symbolic link is not followed."""
        home = self.home({"etc/lists/l": b"l"})
        target = os.path.join(home, "etc/lists/l")
        secret = self.write(self.folder(), "secret", b"secret")

        def before(path: str, call: int) -> None:
            if path == target and call == 0:
                os.unlink(target)
                os.symlink(secret, target)

        scanner = self.scanner(home)
        self.hookHashing(scanner, before)
        result = scanner.scan()
        self.assertEqual(dict(result.files), {})
        self.assertEqual(result.bytesHashed, 0)

    def test_vanishes_after_listing(self) -> None:
        """Files and folders removed after being listed leave no trace and no crash."""
        home = self.home({"etc/shared/g1/agent.conf": b"1", "etc/shared/g2/agent.conf": b"2",
                          "etc/shared/g2/other.conf": b"3"})
        realScandir = os.scandir

        class Listed:
            """A folder's entries read at once, so the folder can change before they are used."""

            def __init__(self, path: str) -> None:
                with realScandir(path) as entries:
                    self.entries = list(entries)

            def __iter__(self):  # type: ignore[no-untyped-def]
                return iter(self.entries)

            def __enter__(self) -> "Listed":
                return self

            def __exit__(self, *exc: object) -> None:
                pass

        def scandir(path: str) -> Listed:
            listed = Listed(path)
            if str(path).endswith("shared"):
                os.unlink(os.path.join(home, "etc/shared/g1/agent.conf"))
                os.rmdir(os.path.join(home, "etc/shared/g1"))
            elif str(path).endswith("g2"):
                os.unlink(os.path.join(home, "etc/shared/g2/agent.conf"))
            return listed

        self.patch(scanModule.os, "scandir", scandir)
        result = self.scanner(home).scan()
        self.assertFiles(home, result, {"etc/shared/g2/other.conf": b"3"})
        self.assertEqual(result.unstable, frozenset())

    def test_unreadable_file(self) -> None:
        """A file that cannot be opened is held (unstable and unreadable), and the rest is scanned."""
        home = self.home({"etc/lists/l": b"l", "etc/lists/m": b"m"})
        target = os.path.join(home, "etc/lists/l")

        def before(path: str, call: int) -> None:
            if path == target:
                raise PermissionError(errno.EACCES, "Permission denied", path)

        scanner = self.scanner(home)
        self.hookHashing(scanner, before)
        result = scanner.scan()
        self.assertFiles(home, result, {"etc/lists/m": b"m"})
        self.assertEqual(result.unstable, frozenset({"etc/lists/l"}))
        self.assertEqual(result.unreadable, frozenset({"etc/lists/l"}))

    def test_unreadable_file_for_real(self) -> None:
        """Without the hook: a file with mode 000, for a user who cannot bypass it."""
        if os.geteuid() == 0:
            raise self.skipTest("root reads files whatever their mode; the hooked test covers this")
        home = self.home({"etc/lists/l": b"l", "etc/lists/m": b"m"})
        target = os.path.join(home, "etc/lists/l")
        os.chmod(target, 0)
        self.addCleanup(os.chmod, target, 0o600)
        result = self.scanner(home).scan()
        self.assertEqual(result.unreadable, frozenset({"etc/lists/l"}))
        self.assertFiles(home, result, {"etc/lists/m": b"m"})

    def test_unlistable_folder(self) -> None:
        """A folder that cannot be listed is held as a whole (its path ends with '/')."""
        home = self.home({"etc/shared/g1/agent.conf": b"1", "etc/shared/g2/agent.conf": b"2"})
        realScandir = os.scandir

        def scandir(path: str) -> object:
            if str(path).endswith("g1"):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return realScandir(path)

        self.patch(scanModule.os, "scandir", scandir)
        result = self.scanner(home).scan()
        self.assertEqual(sorted(result.files), ["etc/shared/g2/agent.conf"])
        self.assertEqual(result.unstable, frozenset({"etc/shared/g1/"}))
        self.assertEqual(result.unreadable, frozenset({"etc/shared/g1/"}))


class RulesetTests(ScanTestCase):
    """Wazuh's own ruleset, as a master with stock rules holds it."""

    def test_ruleset(self) -> None:
        if not all(os.path.isdir(os.path.join(RULESET, d)) for d in ("rules", "decoders", "lists")):
            raise self.skipTest(f"{RULESET}/{{rules,decoders,lists}} is missing: no ruleset corpus on this machine")
        home = self.folder()
        expected: dict[str, bytes] = {}
        for name in ("rules", "decoders", "lists"):
            shutil.copytree(os.path.join(RULESET, name), os.path.join(home, "etc", name))
            for folder, _, names in os.walk(os.path.join(home, "etc", name)):
                for file in names:
                    path = os.path.join(folder, file)
                    with open(path, "rb") as f:
                        expected[os.path.relpath(path, home)] = f.read()
        self.assertEqual(len(expected), 291)
        scanner = self.scanner(home)
        cold = scanner.scan()
        self.assertEqual(len(cold.files), 291)
        self.assertFiles(home, cold, expected)
        warm = scanner.scan()
        self.assertEqual((warm.hashed, warm.reused), (0, 291))
        self.assertEqual(dict(warm.files), dict(cold.files))
