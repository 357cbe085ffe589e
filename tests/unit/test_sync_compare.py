"""
Tests for L{wazuhcluster.sync.manifest} and L{wazuhcluster.sync.compare}: the
manifest a worker sends, and what the master concludes from it.

The last tests run the whole pure pipeline on real files: scan a master's
home and a worker's, send the worker's manifest through the codec, compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.sync.compare import Comparison, compare
from wazuhcluster.sync.manifest import (
    PIECE_SIZE,
    FileEntry,
    ManifestDecoder,
    ManifestError,
    encodeManifest,
)
from wazuhcluster.sync.scan import IntegrityScanner
from wazuhcluster.sync.table import SyncTable

TABLE = SyncTable.load()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def entry(data: bytes = b"", mtime: float = 1_700_000_000.5) -> FileEntry:
    return FileEntry(md5(data), mtime, len(data))


def bigManifest(count: int) -> dict[str, FileEntry]:
    """C{count} varied entries, with paths that need escaping in JSON."""
    rng = random.Random(count)
    odd = ["é", "\"", "\\", "\n", "日本", " ", "\t", "\u2028"]
    files = {}
    for i in range(count):
        path = f"etc/shared/group{i % 97}/{rng.choice(odd)}file{i}.conf"
        data = str(i).encode()
        files[path] = FileEntry(md5(data), rng.randrange(10**18) / 1e9, rng.randrange(2**40))
    return files


def decode(pieces: list[bytes], size: int | None = None, **limits: int) -> dict[str, FileEntry]:
    """Feed C{pieces} (re-cut into C{size} bytes if given) to a decoder and finish it."""
    decoder = ManifestDecoder(**limits)
    data = b"".join(pieces)
    if size is None:
        for piece in pieces:
            decoder.feed(piece)
    else:
        for start in range(0, len(data), size):
            decoder.feed(data[start : start + size])
    return decoder.finish()


class EncodeTests(SynchronousTestCase):
    """L{encodeManifest}: JSON lines in pieces of about 32 KiB."""

    def test_round_trip_in_odd_pieces(self) -> None:
        """20,000 entries survive encoding and decoding, whatever the cut."""
        files = bigManifest(20_000)
        pieces = list(encodeManifest(files))
        self.assertGreater(len(pieces), 10)
        self.assertEqual(decode(pieces), files)
        self.assertEqual(decode(pieces, size=7), files)
        self.assertEqual(decode(pieces, size=10_000), files)
        self.assertEqual(decode([b"".join(pieces)]), files)

    def test_pieces(self) -> None:
        """Each piece holds whole lines and at most 32 KiB, sorted by path."""
        files = bigManifest(5_000)
        pieces = list(encodeManifest(files))
        for piece in pieces:
            self.assertLessEqual(len(piece), PIECE_SIZE)
            self.assertTrue(piece.endswith(b"\n"))
        self.assertGreater(len(pieces[0]), PIECE_SIZE - 200)
        lines = b"".join(pieces).splitlines()
        self.assertEqual(len(lines), 5_000)
        self.assertEqual([json.loads(line)["p"] for line in lines], sorted(files))

    def test_long_line(self) -> None:
        """A line longer than a piece goes alone: pieces are at most 32 KiB plus one line."""
        files = {"etc/rules/" + "a" * 40_000: entry(), "etc/rules/b": entry(), "etc/rules/0": entry()}
        pieces = list(encodeManifest(files))
        self.assertEqual(len(pieces), 3)
        self.assertGreater(len(pieces[1]), PIECE_SIZE)
        self.assertEqual(pieces[1].count(b"\n"), 1)
        self.assertEqual(decode(pieces, maxLine=50_000), files)

    def test_line_format(self) -> None:
        """One compact object per line, with the keys p, m, t and s."""
        (piece,) = encodeManifest({"etc/client.keys": FileEntry("0" * 32, 1.25, 7)})
        self.assertEqual(piece, b'{"p":"etc/client.keys","m":"' + b"0" * 32 + b'","t":1.25,"s":7}\n')

    def test_empty(self) -> None:
        self.assertEqual(list(encodeManifest({})), [])
        self.assertEqual(decode([]), {})

    def test_mtime_exact(self) -> None:
        """Modification times come back as the same floats, to the last bit."""
        files = {f"etc/rules/{i}": entry(mtime=(1_700_000_000_000_000_000 + i * 7919) / 1e9) for i in range(100)}
        self.assertEqual(decode(list(encodeManifest(files))), files)

    def test_not_finite_mtime_refused(self) -> None:
        for mtime in (float("inf"), float("nan")):
            self.assertRaises(ManifestError, list, encodeManifest({"etc/rules/x": entry(mtime=mtime)}))

    @settings(max_examples=100, deadline=None)
    @given(
        st.dictionaries(
            st.text(min_size=1, max_size=30),
            st.builds(
                FileEntry,
                st.text("0123456789abcdef", min_size=32, max_size=32),
                st.floats(min_value=0, max_value=2**40, allow_nan=False, allow_infinity=False),
                st.integers(min_value=0, max_value=2**63 - 1),
            ),
            max_size=30,
        ),
        st.integers(min_value=1, max_value=200),
    )
    def test_round_trip_any(self, files: dict[str, FileEntry], size: int) -> None:
        """Any text path, any cut."""
        self.assertEqual(decode(list(encodeManifest(files)), size=size, maxLine=1000), files)


class DecoderErrorTests(SynchronousTestCase):
    """Everything a peer may get wrong is refused with the line it is on."""

    GOOD = b'{"p":"etc/rules/a","m":"' + b"a" * 32 + b'","t":1.5,"s":3}\n'

    def line(self, **changes: object) -> bytes:
        item: dict[str, object] = {"p": "etc/rules/b", "m": "b" * 32, "t": 2.5, "s": 4}
        item.update(changes)
        return json.dumps({k: v for k, v in item.items() if v is not DROP}).encode() + b"\n"

    def assertRefused(self, data: bytes, *fragments: str, **limits: int) -> str:
        """Feeding C{data} after a good line fails; the message names the problem (and line 2)."""
        decoder = ManifestDecoder(**limits)
        decoder.feed(self.GOOD)
        error = self.assertRaises(ManifestError, decoder.feed, data)
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        # The decoder refuses everything after.
        self.assertRaises(ManifestError, decoder.feed, self.GOOD)
        self.assertRaises(ManifestError, decoder.finish)
        return message

    def test_good(self) -> None:
        decoder = ManifestDecoder()
        decoder.feed(self.GOOD + self.line())
        self.assertEqual(
            decoder.finish(),
            {"etc/rules/a": FileEntry("a" * 32, 1.5, 3), "etc/rules/b": FileEntry("b" * 32, 2.5, 4)},
        )

    def test_integer_mtime(self) -> None:
        """A whole-second mtime written as an integer is a float once decoded."""
        decoder = ManifestDecoder()
        decoder.feed(self.line(t=1_700_000_000))
        value = decoder.finish()["etc/rules/b"].mtime
        self.assertEqual((type(value), value), (float, 1.7e9))

    def test_line_too_long(self) -> None:
        self.assertRefused(self.line(p="x" * 200), "line 2", "100 bytes", maxLine=100)

    def test_partial_line_too_long(self) -> None:
        """A line that never ends is refused as soon as it is too long, not when it ends."""
        decoder = ManifestDecoder(maxLine=100)
        decoder.feed(self.GOOD)
        for _ in range(9):
            decoder.feed(b"x" * 10)
        message = str(self.assertRaises(ManifestError, decoder.feed, b"x" * 11))
        self.assertIn("line 2", message)
        decoder = ManifestDecoder(maxLine=100)
        self.assertRaises(ManifestError, decoder.feed, self.GOOD + b"y" * 101)

    def test_line_exactly_at_limit(self) -> None:
        line = self.line()
        decoder = ManifestDecoder(maxLine=len(line) - 1)
        decoder.feed(line)
        self.assertEqual(len(decoder.finish()), 1)

    def test_invalid_json(self) -> None:
        self.assertRefused(b'{"p": "x",\n', "line 2", "not valid JSON")
        self.assertRefused(b"\n", "line 2", "not valid JSON")
        self.assertRefused(b'{"p":"\xff"}\n', "line 2", "not valid JSON")

    def test_not_an_object(self) -> None:
        self.assertRefused(b'["etc/rules/b"]\n', "line 2", "keys p, m, t and s")
        self.assertRefused(b"42\n", "keys p, m, t and s")

    def test_wrong_keys(self) -> None:
        self.assertRefused(self.line(s=DROP), "keys p, m, t and s")
        self.assertRefused(self.line(x=1), "keys p, m, t and s")

    def test_path_not_text(self) -> None:
        self.assertRefused(self.line(p=5), "path (p)")
        self.assertRefused(self.line(p=None), "path (p)")

    def test_bad_md5(self) -> None:
        self.assertRefused(self.line(m="b" * 31), "MD5 (m)", "32 lowercase")
        self.assertRefused(self.line(m="B" * 32), "MD5 (m)")
        self.assertRefused(self.line(m="g" * 32), "MD5 (m)")
        self.assertRefused(self.line(m=1), "MD5 (m)")
        self.assertRefused(self.line(m="b" * 32 + "\n"), "MD5 (m)")

    def test_bad_mtime(self) -> None:
        self.assertRefused(self.line(t="1.5"), "modification time (t)")
        self.assertRefused(self.line(t=True), "modification time (t)")
        for text in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" + b"0" * 400):
            data = b'{"p":"etc/rules/b","m":"' + b"b" * 32 + b'","t":' + text + b',"s":4}\n'
            self.assertRefused(data, "modification time (t)", "finite")

    def test_bad_size(self) -> None:
        self.assertRefused(self.line(s=-1), "size (s)")
        self.assertRefused(self.line(s=1.0), "size (s)")
        self.assertRefused(self.line(s=False), "size (s)")
        self.assertRefused(self.line(s="4"), "size (s)")
        self.assertRefused(self.line(s=2**63), "size (s)")

    def test_duplicate_path(self) -> None:
        self.assertRefused(self.line(p="etc/rules/a"), "line 2", "repeats", "'etc/rules/a'")

    def test_too_many_entries(self) -> None:
        self.assertRefused(self.line(), "more than the 1 files", maxEntries=1)
        decoder = ManifestDecoder(maxEntries=2)
        decoder.feed(self.GOOD + self.line())
        self.assertEqual(len(decoder.finish()), 2)

    def test_cut_short(self) -> None:
        decoder = ManifestDecoder()
        decoder.feed(self.GOOD + self.line()[:-1])
        message = str(self.assertRaises(ManifestError, decoder.finish))
        self.assertIn("cut short", message)
        self.assertIn("line 2", message)

    def test_feed_after_finish(self) -> None:
        decoder = ManifestDecoder()
        decoder.feed(self.GOOD)
        decoder.finish()
        self.assertRaises(ManifestError, decoder.feed, self.line())


#: Marks a key to leave out of a test line.
DROP = object()


class CompareTests(SynchronousTestCase):
    """Each category of difference, and what is held back or refused."""

    def test_in_sync(self) -> None:
        files = {"etc/client.keys": entry(b"k"), "etc/rules/r.xml": entry(b"r")}
        result = compare(files, dict(files), TABLE)
        self.assertEqual(result, Comparison((), (), (), (), ()))
        self.assertTrue(result.inSync)

    def test_mtime_alone_is_not_a_difference(self) -> None:
        """Equal MD5s are the same file, whatever the times."""
        result = compare({"etc/rules/r.xml": entry(b"r", 1.0)}, {"etc/rules/r.xml": entry(b"r", 2.0)}, TABLE)
        self.assertTrue(result.inSync)

    def test_categories(self) -> None:
        master = {
            "etc/client.keys": entry(b"keys"),
            "etc/rules/same.xml": entry(b"same"),
            "etc/rules/new.xml": entry(b"new"),
            "etc/rules/a_changed.xml": entry(b"master"),
            "queue/agent-groups/002": entry(b"default"),
            "queue/agent-groups/003": entry(b"group1"),
        }
        worker = {
            "etc/client.keys": entry(b"old keys"),
            "etc/rules/same.xml": entry(b"same"),
            "etc/rules/a_changed.xml": entry(b"worker"),
            "etc/rules/gone.xml": entry(b"gone"),
            "etc/shared/old/agent.conf": entry(b"old"),
            "queue/agent-groups/003": entry(b"group2"),
            "queue/agent-groups/009": entry(b"default"),
            "queue/agent-groups/001": entry(b"default"),
        }
        result = compare(master, worker, TABLE)
        self.assertEqual(result.missing, ("etc/rules/new.xml", "queue/agent-groups/002"))
        self.assertEqual(result.shared, ("etc/client.keys", "etc/rules/a_changed.xml", "queue/agent-groups/003"))
        self.assertEqual(result.extra, ("etc/rules/gone.xml", "etc/shared/old/agent.conf"))
        self.assertEqual(result.extra_valid, ("queue/agent-groups/001", "queue/agent-groups/009"))
        self.assertEqual(result.refused, ())
        self.assertFalse(result.inSync)

    def test_each_category_breaks_sync(self) -> None:
        one = {"etc/rules/r.xml": entry(b"r")}
        self.assertFalse(compare(one, {}, TABLE).inSync)
        self.assertFalse(compare(one, {"etc/rules/r.xml": entry(b"x")}, TABLE).inSync)
        self.assertFalse(compare({}, one, TABLE).inSync)
        self.assertFalse(compare({}, {"queue/agent-groups/001": entry()}, TABLE).inSync)

    def test_refused(self) -> None:
        """Worker paths the table refuses are reported, never deleted, and do not break sync."""
        hostile = ["../etc/passwd", "/etc/passwd", "etc/ossec.conf", "etc/rules/../../x",
                   "etc\\rules\\x", "etc/rules//x", "etc/rules/x.swp", "queue/agent-info/001"]
        result = compare({}, {path: entry() for path in hostile}, TABLE)
        self.assertEqual(result.refused, tuple(sorted(hostile)))
        self.assertEqual((result.missing, result.shared, result.extra, result.extra_valid), ((), (), (), ()))
        self.assertTrue(result.inSync)

    def test_refused_non_text_keys(self) -> None:
        """Even keys that are not text (a manifest built by hand) are refused, not a crash."""
        result = compare({}, {b"etc/rules/x": entry(), "etc/rules/y": entry(), 3: entry()}, TABLE)  # type: ignore[dict-item]
        self.assertEqual(set(result.refused), {b"etc/rules/x", 3})
        self.assertEqual(result.extra, ("etc/rules/y",))

    def test_unstable_file(self) -> None:
        """A master file that kept changing is neither sent nor makes the worker's copy extra."""
        master = {"etc/rules/stable.xml": entry(b"s")}
        worker = {"etc/rules/busy.xml": entry(b"old"), "queue/agent-groups/001": entry(b"g")}
        unstable = frozenset({"etc/rules/busy.xml", "queue/agent-groups/001"})
        result = compare(master, worker, TABLE, unstable)
        self.assertEqual(result, Comparison(("etc/rules/stable.xml",), (), (), (), ()))
        without = compare(master, worker, TABLE)
        self.assertEqual(without.extra, ("etc/rules/busy.xml",))
        self.assertEqual(without.extra_valid, ("queue/agent-groups/001",))

    def test_unstable_master_entry_not_sent(self) -> None:
        """If a caller leaves an unstable file in the master's manifest, it is still not sent."""
        master = {"etc/rules/busy.xml": entry(b"new"), "etc/rules/new.xml": entry(b"n")}
        worker = {"etc/rules/busy.xml": entry(b"old")}
        result = compare(master, worker, TABLE, frozenset({"etc/rules/busy.xml", "etc/rules/new.xml"}))
        self.assertTrue(result.inSync)

    def test_unstable_folder(self) -> None:
        """A folder the master could not list holds every worker file under it."""
        worker = {
            "etc/shared/g1/agent.conf": entry(b"1"),
            "etc/shared/g1/sub/x": entry(b"2"),
            "etc/shared/g10/agent.conf": entry(b"3"),
        }
        result = compare({}, worker, TABLE, frozenset({"etc/shared/g1/"}))
        self.assertEqual(result.extra, ("etc/shared/g10/agent.conf",))

    def test_sorted(self) -> None:
        names = [f"etc/rules/{i}.xml" for i in (5, 3, 9, 1, 7)]
        result = compare({n: entry() for n in names}, {}, TABLE)
        self.assertEqual(result.missing, tuple(sorted(names)))
        result = compare({}, {n: entry() for n in names}, TABLE)
        self.assertEqual(result.extra, tuple(sorted(names)))

    def test_comparison_is_frozen(self) -> None:
        import attrs

        result = compare({}, {}, TABLE)
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, result, "missing", ("x",))


class PipelineTests(SynchronousTestCase):
    """Scan a master and a worker for real, send the worker's manifest through the codec, compare."""

    def folder(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        return path

    def write(self, home: str, files: dict[str, bytes]) -> None:
        for relpath, data in files.items():
            path = os.path.join(home, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def test_master_and_worker(self) -> None:
        common = {
            "etc/client.keys": b"001 a any k\n",
            "etc/rules/local_rules.xml": b"<group/>",
            "etc/shared/default/agent.conf": b"<agent_config/>",
        }
        master, worker = self.folder(), self.folder()
        self.write(master, {**common, "etc/lists/new": b"n", "etc/rules/local_rules.xml": b"<group name='v2'/>",
                            "etc/ossec.conf": b"master conf"})
        self.write(worker, {**common, "etc/decoders/old.xml": b"old", "queue/agent-groups/007": b"default",
                            "etc/ossec.conf": b"worker conf", "etc/rules/x.xml~": b"backup"})
        later = lambda: time.time_ns() + 3600 * 10**9  # noqa: E731
        masterScan = IntegrityScanner(master, TABLE, now=later).scan()
        workerScan = IntegrityScanner(worker, TABLE, now=later).scan()
        received = ManifestDecoder()
        for piece in encodeManifest(workerScan.files):
            received.feed(piece)
        result = compare(masterScan.files, received.finish(), TABLE, masterScan.unstable)
        self.assertEqual(
            result,
            Comparison(
                missing=("etc/lists/new",),
                shared=("etc/rules/local_rules.xml",),
                extra=("etc/decoders/old.xml",),
                extra_valid=("queue/agent-groups/007",),
                refused=(),
            ),
        )
        # Once the worker applies it (by hand here), both sides agree.
        for relpath in result.missing + result.shared:
            with open(os.path.join(master, relpath), "rb") as f:
                self.write(worker, {relpath: f.read()})
        for relpath in result.extra:
            os.unlink(os.path.join(worker, relpath))
        for relpath in result.extra_valid:
            with open(os.path.join(worker, relpath), "rb") as f:
                self.write(master, {relpath: f.read()})
        masterScan = IntegrityScanner(master, TABLE, now=later).scan()
        workerScan = IntegrityScanner(worker, TABLE, now=later).scan()
        self.assertTrue(compare(masterScan.files, workerScan.files, TABLE).inSync)
