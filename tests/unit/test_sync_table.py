"""
Tests for L{wazuhcluster.sync.table}: which files are synchronised, and the
refusal of paths from a peer that could reach anything else.

Symbolic-link escapes are built for real in C{self.mktemp()} folders, since
the check is about what the disk holds.
"""

from __future__ import annotations

import json
import os
import shutil

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.sync.table import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    TEMPORARY_PREFIX,
    SyncRule,
    SyncTable,
    TableError,
    UnsafePath,
)

TABLE = SyncTable.load()

# Every row of the table, as the integrity synchronisation needs it.
EXPECTED_RULES = {
    "etc/": (("client.keys",), False, 0o640, False, False),
    "etc/shared/": (None, True, 0o660, True, False),
    "var/multigroups/": (("merged.mg",), True, 0o660, True, False),
    "etc/rules/": (None, True, 0o660, False, False),
    "etc/decoders/": (None, True, 0o660, False, False),
    "etc/lists/": (None, True, 0o660, False, False),
    "queue/agent-groups/": (None, True, 0o660, False, True),
}

# Path -> the folder of the rule it falls under.
INSIDE = {
    "etc/client.keys": "etc/",
    "etc/shared/default/agent.conf": "etc/shared/",
    "etc/shared/a/b/c.txt": "etc/shared/",
    "etc/shared/client.keys": "etc/shared/",
    "var/multigroups/x/merged.mg": "var/multigroups/",
    "var/multigroups/merged.mg": "var/multigroups/",
    "etc/rules/local_rules.xml": "etc/rules/",
    "etc/rules/sub/deeper/r.xml": "etc/rules/",
    "etc/decoders/local_decoder.xml": "etc/decoders/",
    "etc/lists/audit-keys": "etc/lists/",
    "etc/lists/amazon/aws-eventnames.cdb": "etc/lists/",
    "queue/agent-groups/001": "queue/agent-groups/",
    "etc/rules/notes.tmp.xml": "etc/rules/",
    "etc/rules/wazuhcluster-1.xml": "etc/rules/",
}

# Paths that are never synchronised.
OUTSIDE = [
    "etc/ossec.conf",
    "etc/internal_options.conf",
    "etc/local_internal_options.conf",
    "etc/sslmanager.key",
    "etc/sub/client.keys",
    "etc/shared/default/ar.conf",
    "etc/shared/ossec.conf",
    "var/multigroups/x/other",
    "var/multigroups/x/merged.mg.tmp",
    "etc/rules/local_rules.xml~",
    "etc/rules/local_rules.xml.swp",
    "etc/decoders/d.xml.lock",
    "etc/lists/list.tmp",
    "etc/shared/default/.agent.conf.swp",
    "etc/shared/old.tmp/agent.conf",
    "etc/rules/.wazuhcluster-123.tmp",
    "etc/rules/.wazuhcluster-123",
    "etc/shared/.wazuhcluster-x/agent.conf",
    "queue/agent-info/x",
    "queue/agent-groups",
    "logs/cluster.log",
    "client.keys",
    "etc",
    "etcetera/client.keys",
    "var/multigroups",
]


class TableTestCase(SynchronousTestCase):
    """Helpers for Wazuh homes in temporary folders."""

    def folder(self) -> str:
        """A new empty folder, removed after the test."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        return path

    def home(self) -> str:
        """A new Wazuh home with the usual folders of the table."""
        home = self.folder()
        for folder in TABLE.folders():
            os.makedirs(os.path.join(home, folder), exist_ok=True)
        return home

    def assertUnsafe(self, relpath: object, *fragments: str, home: str | None = None) -> str:
        """
        Validating (or resolving under C{home}) C{relpath} fails with a
        one-line message naming the path and holding every fragment.
        """
        if home is None:
            error = self.assertRaises(UnsafePath, TABLE.validate, relpath)
        else:
            error = self.assertRaises(UnsafePath, TABLE.resolve, home, relpath)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("refusing the path "), message)
        self.assertIn(repr(relpath)[:50], message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertIs(error.path, relpath)
        return message


class PackagedTableTests(TableTestCase):
    """The table shipped in C{wazuhcluster/sync/cluster.json}."""

    def test_rules(self) -> None:
        """Every row of the table, with its names, recursion, mode and flags."""
        found = {
            rule.folder: (rule.names, rule.recursive, rule.mode, rule.prune_empty_folders, rule.extra_valid)
            for rule in TABLE.rules
        }
        self.assertEqual(found, EXPECTED_RULES)
        self.assertEqual(len(TABLE.rules), len(EXPECTED_RULES))

    def test_exclusions(self) -> None:
        """Wazuh's excluded names and endings."""
        self.assertEqual(TABLE.excluded_names, frozenset({"ossec.conf", "ar.conf"}))
        self.assertEqual(sorted(TABLE.excluded_suffixes), sorted(["~", ".tmp", ".lock", ".swp"]))

    def test_folders(self) -> None:
        """The distinct folders, for watching."""
        self.assertEqual(sorted(TABLE.folders()), sorted(EXPECTED_RULES))

    def test_folders_distinct(self) -> None:
        """A folder named by two rules is listed once."""
        rule = SyncRule("etc/rules/", None, True, 0o660, False, False)
        table = SyncTable((rule, rule), frozenset(), ())
        self.assertEqual(table.folders(), ("etc/rules/",))

    def test_load_by_path(self) -> None:
        """Loading a copy of the packaged file gives the same table."""
        path = os.path.join(self.folder(), "cluster.json")
        import wazuhcluster.sync

        shutil.copy(os.path.join(os.path.dirname(wazuhcluster.sync.__file__), "cluster.json"), path)
        self.assertEqual(SyncTable.load(path), TABLE)

    def test_modes(self) -> None:
        """C{client.keys} is 0640 on a worker, everything else 0660."""
        self.assertEqual(TABLE.validate("etc/client.keys").mode, 0o640)
        for path in ("etc/shared/default/agent.conf", "var/multigroups/x/merged.mg",
                     "etc/rules/r.xml", "etc/decoders/d.xml", "etc/lists/l", "queue/agent-groups/001"):
            self.assertEqual(TABLE.validate(path).mode, 0o660, path)


class RuleForTests(TableTestCase):
    """Which paths are in the table, and under which rule."""

    def test_inside(self) -> None:
        """Each synchronised path falls under the rule with the longest folder."""
        for path, folder in INSIDE.items():
            rule = TABLE.ruleFor(path)
            self.assertIsNotNone(rule, path)
            assert rule is not None
            self.assertEqual(rule.folder, folder, path)
            self.assertIs(TABLE.validate(path), rule)

    def test_outside(self) -> None:
        """Excluded names and endings, other folders and folder paths are not synchronised."""
        for path in OUTSIDE:
            self.assertIsNone(TABLE.ruleFor(path), path)
            self.assertRaises(UnsafePath, TABLE.validate, path)

    def test_extra_valid_only_agent_groups(self) -> None:
        """Only worker files in C{queue/agent-groups/} go back to the master."""
        self.assertTrue(TABLE.validate("queue/agent-groups/001").extra_valid)
        self.assertFalse(TABLE.validate("etc/rules/r.xml").extra_valid)

    def test_longest_folder_alone_decides(self) -> None:
        """A file in a sub-rule's folder that the sub-rule refuses is not taken by the outer rule."""
        outer = SyncRule("a/", None, True, 0o660, False, False)
        inner = SyncRule("a/b/", ("x",), True, 0o660, False, False)
        table = SyncTable((outer, inner), frozenset(), ())
        self.assertIs(table.ruleFor("a/b/x"), inner)
        self.assertIs(table.ruleFor("a/b/c/x"), inner)
        self.assertIsNone(table.ruleFor("a/b/y"))
        self.assertIs(table.ruleFor("a/c/y"), outer)
        self.assertIs(table.ruleFor("a/bb/y"), outer)

    def test_is_excluded(self) -> None:
        """The exclusion test the scanner and the writer share."""
        for name in ("ossec.conf", "ar.conf", "x~", "x.tmp", "x.lock", "x.swp", TEMPORARY_PREFIX + "1"):
            self.assertTrue(TABLE.isExcluded(name), name)
        for name in ("client.keys", "x.xml", "tmp", "wazuhcluster-1"):
            self.assertFalse(TABLE.isExcluded(name), name)


class ValidateTests(TableTestCase):
    """Paths from a peer that must be refused, each with its reason."""

    def test_climbing(self) -> None:
        self.assertUnsafe("../etc/passwd", "'..'")
        self.assertUnsafe("etc/rules/../../x", "'..'")
        self.assertUnsafe("etc/rules/..", "'..'")

    def test_absolute(self) -> None:
        self.assertUnsafe("/etc/passwd", "absolute")
        self.assertUnsafe("/var/ossec/etc/rules/x", "absolute")

    def test_nul(self) -> None:
        self.assertUnsafe("etc/rules/a\0b", "NUL")

    def test_backslash(self) -> None:
        self.assertUnsafe("etc\\rules\\x", "backslash")
        self.assertUnsafe("etc/rules/..\\..\\x", "backslash")

    def test_empty_component(self) -> None:
        self.assertUnsafe("etc/rules//x", "empty component")
        self.assertUnsafe("etc/rules/x/", "empty component")

    def test_dot_component(self) -> None:
        self.assertUnsafe("etc/rules/./x", "'.'")
        self.assertUnsafe("./etc/rules/x", "'.'")

    def test_empty(self) -> None:
        self.assertUnsafe("", "empty")

    def test_error_parts(self) -> None:
        """The error keeps the path and the reason apart; callers may also give a plain message."""
        error = self.assertRaises(UnsafePath, TABLE.validate, "../x")
        self.assertEqual((error.path, error.reason), ("../x", "the path climbs up with a '..' component"))
        self.assertEqual(str(error), "refusing the path '../x': the path climbs up with a '..' component")
        plain = UnsafePath("agent '777' is not registered on the master")
        self.assertEqual(str(plain), "agent '777' is not registered on the master")
        self.assertIsInstance(plain, ValueError)

    def test_not_text(self) -> None:
        """Bytes, numbers and nothing are refused, naming their type."""
        self.assertUnsafe(b"etc/rules/x", "text", "bytes")
        self.assertUnsafe(None, "NoneType")
        self.assertUnsafe(12, "int")
        self.assertUnsafe(["etc/rules/x"], "list")

    def test_not_utf8(self) -> None:
        """A string that cannot be UTF-8 (a lone surrogate from a non-UTF-8 name)."""
        self.assertUnsafe("etc/rules/\udcff.xml", "UTF-8")

    def test_huge_names(self) -> None:
        """Names over 255 bytes and paths over 4096 bytes, counted in UTF-8."""
        self.assertUnsafe("etc/rules/" + "a" * (MAX_NAME_BYTES + 1), "255")
        self.assertUnsafe("etc/rules/" + "é" * 128, "255")
        self.assertEqual(TABLE.validate("etc/rules/" + "é" * 127).folder, "etc/rules/")
        self.assertEqual(TABLE.validate("etc/rules/" + "a" * MAX_NAME_BYTES).folder, "etc/rules/")
        deep = "etc/rules/" + "/".join(["d" * 200] * 21)
        self.assertGreater(len(deep), MAX_PATH_BYTES)
        message = self.assertUnsafe(deep, "4096")
        self.assertLess(len(message), 400)
        self.assertUnsafe("etc/rules/" + "x" * 1_000_000, "4096")

    def test_not_synchronised(self) -> None:
        """Paths outside the table say why."""
        self.assertUnsafe("etc/ossec.conf", "not synchronised", "only client.keys")
        self.assertUnsafe("etc/shared/ossec.conf", "'ossec.conf' is never synchronised")
        self.assertUnsafe("etc/rules/local_rules.xml~", "'~'")
        self.assertUnsafe("etc/rules/x.swp", "'.swp'")
        self.assertUnsafe("etc/rules/.wazuhcluster-123.tmp", "not synchronised")
        self.assertUnsafe("etc/rules/.wazuhcluster-123", "temporary")
        self.assertUnsafe("etc/sub/client.keys", "sub-folders")
        self.assertUnsafe("queue/agent-info/x", "no synchronised folder")

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.sampled_from(["etc", "rules", "shared", "..", ".", "", "client.keys", "queue",
                                 "agent-groups", "x.tmp", "ossec.conf", "multigroups", "var", "merged.mg"]),
                st.text(max_size=8),
            ),
            min_size=1,
            max_size=6,
        ).map("/".join)
    )
    def test_accepted_paths_stay_in_their_folder(self, relpath: str) -> None:
        """Whatever text a peer sends, an accepted path is clean and lies in its rule's folder."""
        try:
            rule = TABLE.validate(relpath)
        except UnsafePath as e:
            self.assertNotIn("\n", str(e))
            return
        self.assertEqual(os.path.normpath(relpath), relpath)
        self.assertFalse(os.path.isabs(relpath))
        self.assertTrue(relpath.startswith(rule.folder))
        self.assertNotIn("\0", relpath)
        self.assertNotIn("\\", relpath)
        self.assertIs(TABLE.ruleFor(relpath), rule)


class ResolveTests(TableTestCase):
    """Where a path from the master may be written on this node's disk."""

    def test_plain(self) -> None:
        """A file in an existing folder, new or already there."""
        home = self.home()
        path, rule = TABLE.resolve(home, "etc/rules/local_rules.xml")
        self.assertEqual(path, os.path.join(home, "etc", "rules", "local_rules.xml"))
        self.assertEqual(rule.folder, "etc/rules/")
        with open(path, "w") as f:
            f.write("<group/>")
        self.assertEqual(TABLE.resolve(home, "etc/rules/local_rules.xml"), (path, rule))

    def test_missing_folders(self) -> None:
        """The rule folder and sub-folders may be missing: the writer creates them."""
        home = self.folder()
        path, rule = TABLE.resolve(home, "etc/shared/default/agent.conf")
        self.assertEqual(path, os.path.join(home, "etc", "shared", "default", "agent.conf"))
        self.assertEqual(rule.folder, "etc/shared/")
        os.makedirs(os.path.join(home, "etc", "shared"))
        self.assertEqual(TABLE.resolve(home, "etc/shared/default/agent.conf")[0], path)

    def test_relative_home(self) -> None:
        """A relative home gives an absolute path."""
        home = self.home()
        path, _ = TABLE.resolve(os.path.relpath(home), "etc/client.keys")
        self.assertEqual(path, os.path.join(home, "etc", "client.keys"))

    def test_unsafe_text_refused_first(self) -> None:
        """Hostile text is refused before the disk is looked at."""
        home = self.home()
        self.assertUnsafe("../etc/passwd", "'..'", home=home)
        self.assertUnsafe("etc/ossec.conf", "not synchronised", home=home)

    def test_rule_folder_links_outside(self) -> None:
        """HOME/etc/rules is a symbolic link to another place: refused."""
        home = self.home()
        elsewhere = self.folder()
        os.rmdir(os.path.join(home, "etc", "rules"))
        os.symlink(elsewhere, os.path.join(home, "etc", "rules"))
        self.assertUnsafe("etc/rules/x.xml", "symbolic link", elsewhere, "outside", home=home)
        self.assertUnsafe("etc/rules/sub/x.xml", "symbolic link", home=home)

    def test_rule_folder_links_to_tmp(self) -> None:
        """A relative link climbing out of the home is refused too."""
        home = self.home()
        os.rmdir(os.path.join(home, "etc", "rules"))
        os.symlink("../../..", os.path.join(home, "etc", "rules"))
        self.assertUnsafe("etc/rules/x.xml", "symbolic link", home=home)

    def test_rule_folder_links_inside_home(self) -> None:
        """
        A rule folder linked to a folder inside the home is refused too: a
        link to api/configuration would publish the API's users.
        """
        home = self.home()
        os.makedirs(os.path.join(home, "api", "configuration"))
        os.rmdir(os.path.join(home, "etc", "rules"))
        os.symlink("../api/configuration", os.path.join(home, "etc", "rules"))
        self.assertUnsafe("etc/rules/users.json", "symbolic link", "inside", "replace it with a real folder", home=home)

    def test_rule_folder_not_a_folder(self) -> None:
        home = self.home()
        os.rmdir(os.path.join(home, "etc", "rules"))
        open(os.path.join(home, "etc", "rules"), "w").close()
        self.assertUnsafe("etc/rules/x.xml", "not a folder", home=home)

    def test_sub_folder_links_outside(self) -> None:
        """HOME/etc/rules/sub is a symbolic link to another place: refused."""
        home = self.home()
        elsewhere = self.folder()
        os.symlink(elsewhere, os.path.join(home, "etc", "rules", "sub"))
        self.assertUnsafe("etc/rules/sub/x.xml", "symbolic link", "sub", home=home)
        self.assertUnsafe("etc/rules/sub/deeper/x.xml", "symbolic link", home=home)
        self.assertEqual(os.listdir(elsewhere), [])

    def test_sub_folder_links_inside(self) -> None:
        """Even a link to a folder of the same rule is refused: links are never followed."""
        home = self.home()
        os.makedirs(os.path.join(home, "etc", "shared", "default"))
        os.symlink("default", os.path.join(home, "etc", "shared", "alias"))
        self.assertUnsafe("etc/shared/alias/agent.conf", "symbolic link", home=home)

    def test_target_is_link(self) -> None:
        """The target itself is a symbolic link, to outside or beside it: refused."""
        home = self.home()
        secret = os.path.join(self.folder(), "passwd")
        with open(secret, "w") as f:
            f.write("root:x:0:0")
        os.symlink(secret, os.path.join(home, "etc", "client.keys"))
        self.assertUnsafe("etc/client.keys", "symbolic link", home=home)
        rules = os.path.join(home, "etc", "rules")
        with open(os.path.join(rules, "real.xml"), "w") as f:
            f.write("<group/>")
        os.symlink("real.xml", os.path.join(rules, "alias.xml"))
        self.assertUnsafe("etc/rules/alias.xml", "symbolic link", home=home)
        os.symlink("missing.xml", os.path.join(rules, "dangling.xml"))
        self.assertUnsafe("etc/rules/dangling.xml", "symbolic link", home=home)

    def test_target_is_folder(self) -> None:
        home = self.home()
        os.makedirs(os.path.join(home, "etc", "rules", "x.xml"))
        self.assertUnsafe("etc/rules/x.xml", "not a regular file", home=home)

    def test_target_is_fifo(self) -> None:
        home = self.home()
        os.mkfifo(os.path.join(home, "queue", "agent-groups", "001"))
        self.assertUnsafe("queue/agent-groups/001", "not a regular file", home=home)

    def test_parent_is_file(self) -> None:
        """A file where a folder should be."""
        home = self.home()
        open(os.path.join(home, "etc", "shared", "default"), "w").close()
        self.assertUnsafe("etc/shared/default/agent.conf", "not a folder", home=home)

    def test_home_reached_through_link(self) -> None:
        """A home given by a symbolic link works, and escapes are still refused."""
        home = self.home()
        link = os.path.join(self.folder(), "ossec")
        os.symlink(home, link)
        path, _ = TABLE.resolve(link, "etc/rules/x.xml")
        self.assertEqual(path, os.path.join(link, "etc", "rules", "x.xml"))
        os.symlink(self.folder(), os.path.join(home, "etc", "rules", "sub"))
        self.assertUnsafe("etc/rules/sub/x.xml", "symbolic link", home=link)


class LoadErrorTests(TableTestCase):
    """A broken table file stops the node with a message naming the file and the entry."""

    def writeTable(self, document: object) -> str:
        path = os.path.join(self.folder(), "cluster.json")
        with open(path, "w") as f:
            f.write(document if isinstance(document, str) else json.dumps(document))
        return path

    def rule(self, **changes: object) -> dict[str, object]:
        rule: dict[str, object] = {
            "folder": "etc/rules/", "files": "all", "recursive": True, "mode": "0660",
            "prune_empty_folders": False, "extra_valid": False,
        }
        rule.update(changes)
        return rule

    def document(self, *rules: object, **changes: object) -> dict[str, object]:
        document: dict[str, object] = {
            "rules": list(rules) or [self.rule()], "excluded_names": [], "excluded_suffixes": [],
        }
        document.update(changes)
        return document

    def assertTableError(self, document: object, *fragments: str) -> str:
        path = self.writeTable(document)
        message = str(self.assertRaises(TableError, SyncTable.load, path))
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(path + ":"), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_minimal(self) -> None:
        """A small valid document loads, with modes written as Wazuh or chmod writes them."""
        table = SyncTable.load(self.writeTable(self.document(
            self.rule(), self.rule(folder="etc/", files=["client.keys"], mode="0o640", recursive=False),
        )))
        self.assertEqual([r.mode for r in table.rules], [0o660, 0o640])
        self.assertEqual(table.rules[1].names, ("client.keys",))

    def test_missing_file(self) -> None:
        path = os.path.join(self.folder(), "nothing.json")
        message = str(self.assertRaises(TableError, SyncTable.load, path))
        self.assertIn(path, message)
        self.assertIn("cannot read", message)

    def test_not_json(self) -> None:
        self.assertTableError('{\n "rules": [,]\n}', ":2:", "not valid JSON")

    def test_not_utf8(self) -> None:
        path = os.path.join(self.folder(), "cluster.json")
        with open(path, "wb") as f:
            f.write(b'{"rules": "\xff"}')
        self.assertIn("UTF-8", str(self.assertRaises(TableError, SyncTable.load, path)))

    def test_top_level(self) -> None:
        self.assertTableError([], "top level")
        self.assertTableError(self.document(extra=1), "'extra'")
        document = self.document()
        del document["excluded_suffixes"]
        self.assertTableError(document, "'excluded_suffixes'", "missing")
        self.assertTableError(self.document(rules=[]), "'rules'")
        self.assertTableError(self.document(excluded_names="ossec.conf"), "'excluded_names'")
        self.assertTableError(self.document(excluded_suffixes=[""]), "'excluded_suffixes'")

    def test_rule_keys(self) -> None:
        rule = self.rule()
        del rule["mode"]
        self.assertTableError(self.document(rule), "rule 1", "'mode'", "missing")
        self.assertTableError(self.document(self.rule(permissions="0660")), "'permissions'")
        self.assertTableError(self.document("etc/"), "rule 1 must be an object")

    def test_bad_values(self) -> None:
        cases: list[tuple[dict[str, object], str]] = [
            ({"folder": "etc/rules"}, "'folder'"),
            ({"folder": "/etc/rules/"}, "'folder'"),
            ({"folder": "etc/../rules/"}, "'folder'"),
            ({"folder": "etc//rules/"}, "'folder'"),
            ({"files": []}, "'files'"),
            ({"files": ["a/b"]}, "'files'"),
            ({"files": "some"}, "'files'"),
            ({"recursive": "yes"}, "'recursive'"),
            ({"extra_valid": 1}, "'extra_valid'"),
            ({"mode": 432}, "'mode'"),
            ({"mode": "0999"}, "'mode'"),
            ({"mode": "rw-rw----"}, "'mode'"),
        ]
        for changes, fragment in cases:
            self.assertTableError(self.document(self.rule(**changes)), fragment, "fix the synchronisation table")

    def test_duplicate_folder(self) -> None:
        self.assertTableError(self.document(self.rule(), self.rule()), "rule 2", "two rules")


class ResolverTests(TableTestCase):
    """The resolver of one transfer checks a path's folder once, and every name of it."""

    def test_knownFolderStillChecksEachName(self) -> None:
        """
        Once a path of a folder passed, another name in the same folder is
        still refused for what is wrong with the name itself, with the same
        reason as a full check gives.
        """
        home = self.home()
        resolve = TABLE.resolver(home)
        self.assertEqual(resolve("queue/agent-groups/001")[0], os.path.join(home, "queue/agent-groups/001"))
        self.assertEqual(resolve("etc/client.keys")[0], os.path.join(home, "etc/client.keys"))
        bad = [
            "queue/agent-groups/..",
            "queue/agent-groups/.",
            "queue/agent-groups/",
            "queue/agent-groups/x\0y",
            "queue/agent-groups/x\\y",
            "queue/agent-groups/002.swp",
            "queue/agent-groups/.wazuhcluster-0123456789abcdef.tmp",
            "queue/agent-groups/" + "x" * 256,
            "queue/agent-groups/" + "é" * 200,
            "etc/ossec.conf",
            "etc/other",
        ]
        for relpath in bad:
            with self.subTest(relpath=relpath):
                expected = str(self.assertRaises(UnsafePath, TABLE.validate, relpath))
                self.assertEqual(str(self.assertRaises(UnsafePath, resolve, relpath)), expected)
        # Non-ASCII names that are fine pass the full check.
        self.assertEqual(resolve("queue/agent-groups/é")[1].folder, "queue/agent-groups/")

    def test_knownFolderStillChecksTheDisk(self) -> None:
        """A known folder spares the name checks, not the look at the target on disk."""
        home = self.home()
        resolve = TABLE.resolver(home)
        resolve("etc/rules/a.xml")
        os.symlink("/etc/passwd", os.path.join(home, "etc/rules/b.xml"))
        self.assertIn("symbolic link", str(self.assertRaises(UnsafePath, resolve, "etc/rules/b.xml")))
        os.makedirs(os.path.join(home, "etc/rules/c.xml"))
        self.assertIn("not a regular file", str(self.assertRaises(UnsafePath, resolve, "etc/rules/c.xml")))
