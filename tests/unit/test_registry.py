"""Registering and removing agents in a home's client.keys, on real files."""

from __future__ import annotations

import base64
import errno
import io
import os
import stat
import sys

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents import registry as registrymodule
from wazuhcluster.agents.clientkeys import AgentKey
from wazuhcluster.agents.manage import WORKER_REFUSAL, run
from wazuhcluster.agents.registry import AgentRegistry, RegistryError
from wazuhcluster.home import WazuhHome

KEY = "a" * 64

EXISTING = (
    "# hand-written header\n"
    f"001 web-01 10.0.0.5 {KEY}\n"
    "\n"
    f"007 !old 10.0.0.7 {KEY}\n"
    "this line is broken\n"
    f"002 branch 192.168.0.0/24 {KEY}\n"
    f"003 roamer any {KEY}\n"
).encode()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class RegistryTestsMixin:
    """A home with a realistic client.keys."""

    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))  # type: ignore[attr-defined]
        self.keysPath = self.home.path("etc", "client.keys")
        _write(self.keysPath, EXISTING)
        self.registry = AgentRegistry(self.home)


class RegisterTests(RegistryTestsMixin, SynchronousTestCase):
    def test_register(self) -> None:
        """A new agent gets the next ID and a fresh key, on a new last line."""
        done = self.registry.register("db", "10.0.0.9")
        self.assertEqual((done.agent.id, done.agent.name, done.agent.ip), ("008", "db", "10.0.0.9"))
        self.assertRegex(done.agent.key, r"\A[0-9a-f]{64}\Z")
        self.assertEqual(done.replaced, ())
        self.assertEqual(_read(self.keysPath), EXISTING + done.agent.line())
        self.assertEqual(self.registry.list()[-1], done.agent)

    def test_keysDiffer(self) -> None:
        first = self.registry.register("a1", "any").agent
        second = self.registry.register("a2", "any").agent
        self.assertEqual((first.id, second.id), ("008", "009"))
        self.assertNotEqual(first.key, second.key)

    def test_fileMode(self) -> None:
        self.registry.register("db", "any")
        self.assertEqual(stat.S_IMODE(os.stat(self.keysPath).st_mode), 0o640)

    def test_noFileYet(self) -> None:
        """A home without client.keys starts at 001."""
        registry = AgentRegistry(WazuhHome(os.path.abspath(self.mktemp())))
        self.assertEqual(registry.register("first", "any").agent.id, "001")
        self.assertEqual(registry.register("second", "any").agent.id, "002")

    def test_idsAbove999(self) -> None:
        _write(self.keysPath, f"999 last any {KEY}\n".encode())
        self.assertEqual(self.registry.register("next", "any").agent.id, "1000")

    def test_duplicateName(self) -> None:
        e = self.assertRaises(RegistryError, self.registry.register, "web-01", "10.9.9.9")
        self.assertIn("already used by agent 001 (web-01, 10.0.0.5)", str(e))
        self.assertIn("--force", str(e))
        self.assertEqual(_read(self.keysPath), EXISTING)
        self.assertFalse(os.path.exists(self.registry.groupPath("008")))

    def test_duplicateIP(self) -> None:
        e = self.assertRaises(RegistryError, self.registry.register, "other", "10.0.0.5")
        self.assertIn("agent 001", str(e))
        self.assertEqual(_read(self.keysPath), EXISTING)

    def test_anyIsNeverInUse(self) -> None:
        self.assertEqual(self.registry.register("another-roamer", "any").agent.id, "008")

    def test_cidr(self) -> None:
        """A network collides only with the same network."""
        self.assertRaises(RegistryError, self.registry.register, "b2", "192.168.0.0/24")
        self.assertEqual(self.registry.register("b3", "192.168.0.0/16").agent.id, "008")
        self.assertEqual(self.registry.register("b4", "192.168.0.1").agent.id, "009")

    def test_removedNamesAreFree(self) -> None:
        """The name and address of a removed agent can be used again, with a new ID."""
        done = self.registry.register("old", "10.0.0.7")
        self.assertEqual(done.agent.id, "008")

    def test_force(self) -> None:
        """With force, the agents holding the name or the address are removed, with their files."""
        for agentID in ("001", "002"):
            _write(self.registry.groupPath(agentID), b"default\n")
        _write(self.home.path("queue", "agent-info", "web-01-10.0.0.5"), b"Linux - Wazuh v3.8.2\n")
        done = self.registry.register("web-01", "192.168.0.0/24", force=True)
        self.assertEqual(
            done.replaced,
            (AgentKey("001", "web-01", "10.0.0.5", KEY), AgentKey("002", "branch", "192.168.0.0/24", KEY)),
        )
        self.assertEqual(done.agent.id, "008")
        self.assertEqual(
            _read(self.keysPath),
            EXISTING.replace(b"001 web-01", b"001 !web-01").replace(b"002 branch", b"002 !branch")
            + done.agent.line(),
        )
        self.assertFalse(os.path.exists(self.registry.groupPath("001")))
        self.assertFalse(os.path.exists(self.registry.groupPath("002")))
        self.assertFalse(os.path.exists(self.home.path("queue", "agent-info", "web-01-10.0.0.5")))
        self.assertEqual(_read(self.registry.groupPath("008")), b"default\n")

    def test_badInput(self) -> None:
        for name, ip, group in (
            ("bad name", "any", "default"),
            ("ok", "10.0.0.256", "default"),
            ("ok", "any", "../etc"),
            ("ok", "any", "g" * 256),
            ("x" * 129, "any", "default"),
        ):
            self.assertRaises(RegistryError, self.registry.register, name, ip, group)
        self.assertEqual(_read(self.keysPath), EXISTING)
        self.assertFalse(os.path.exists(self.home.path("queue", "agent-groups")))

    def test_groupFile(self) -> None:
        done = self.registry.register("db", "any", group="web.servers-2")
        path = self.registry.groupPath(done.agent.id)
        self.assertEqual(_read(path), b"web.servers-2\n")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertEqual(done.group, "web.servers-2")

    def test_defaultGroup(self) -> None:
        done = self.registry.register("db", "any")
        self.assertEqual(_read(self.registry.groupPath(done.agent.id)), b"default\n")

    def test_longestGroup(self) -> None:
        done = self.registry.register("db", "any", group="g" * 255)
        self.assertEqual(_read(self.registry.groupPath(done.agent.id)), b"g" * 255 + b"\n")


class RemoveTests(RegistryTestsMixin, SynchronousTestCase):
    def test_remove(self) -> None:
        """A removed agent is marked with '!' and its files go; nothing else changes."""
        _write(self.registry.groupPath("001"), b"default\n")
        _write(self.registry.groupPath("003"), b"default\n")
        infoPath = self.home.path("queue", "agent-info", "web-01-10.0.0.5")
        otherInfo = self.home.path("queue", "agent-info", "roamer-any")
        _write(infoPath, b"Linux - Wazuh v3.8.2\n")
        _write(otherInfo, b"Linux - Wazuh v3.8.2\n")
        removed = self.registry.remove("001")
        self.assertEqual(removed, AgentKey("001", "web-01", "10.0.0.5", KEY))
        self.assertEqual(_read(self.keysPath), EXISTING.replace(b"001 web-01", b"001 !web-01"))
        self.assertFalse(os.path.exists(self.registry.groupPath("001")))
        self.assertFalse(os.path.exists(infoPath))
        self.assertTrue(os.path.exists(self.registry.groupPath("003")))
        self.assertTrue(os.path.exists(otherInfo))

    def test_removeWithoutFiles(self) -> None:
        self.registry.remove("003")
        self.assertNotIn("003", {a.id for a in self.registry.list()})

    def test_unpaddedID(self) -> None:
        self.assertEqual(self.registry.remove("2").id, "002")

    def test_unknown(self) -> None:
        for agentID in ("999", "007", "abc"):
            e = self.assertRaises(RegistryError, self.registry.remove, agentID)
            self.assertIn(repr(agentID), str(e))
        self.assertEqual(_read(self.keysPath), EXISTING)

    def test_idsNotReused(self) -> None:
        self.registry.remove("003")
        self.assertEqual(self.registry.register("again", "any").agent.id, "008")


class AtomicityTests(RegistryTestsMixin, SynchronousTestCase):
    def _failingWrites(self) -> None:
        """Make every write to an open file fail as on a full disk."""

        class Full(io.BufferedWriter):
            def write(self, data: object) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        realFdopen = os.fdopen

        def fdopen(fd: int, *args: object, **kwargs: object) -> object:
            f = realFdopen(fd, *args, **kwargs)  # type: ignore[arg-type]
            raw = f.detach()  # type: ignore[union-attr]
            return Full(raw)

        self.patch(os, "fdopen", fdopen)

    def _folderContents(self, *parts: str) -> list[str]:
        path = self.home.path(*parts)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def test_registerFailsCleanly(self) -> None:
        self._failingWrites()
        e = self.assertRaises(OSError, self.registry.register, "db", "any")
        self.assertEqual(e.errno, errno.ENOSPC)
        self.assertEqual(_read(self.keysPath), EXISTING)
        self.assertEqual(self._folderContents("etc"), ["client.keys", "client.keys.lock"])
        self.assertEqual(self._folderContents("queue", "agent-groups"), [])

    def test_keysWriteFailsAfterGroup(self) -> None:
        """When client.keys cannot be written, the new group file is taken back."""
        real = registrymodule.writeFileAtomically

        def failOnKeys(path: str, data: bytes, mode: int = 0o640) -> None:
            if path.endswith("client.keys"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data, mode)

        self.patch(registrymodule, "writeFileAtomically", failOnKeys)
        self.assertRaises(OSError, self.registry.register, "db", "any")
        self.assertEqual(_read(self.keysPath), EXISTING)
        self.assertEqual(self._folderContents("queue", "agent-groups"), [])

    def test_removeFailsCleanly(self) -> None:
        _write(self.registry.groupPath("001"), b"default\n")
        self._failingWrites()
        self.assertRaises(OSError, self.registry.remove, "001")
        self.assertEqual(_read(self.keysPath), EXISTING)
        self.assertEqual(self._folderContents("etc"), ["client.keys", "client.keys.lock"])
        self.assertTrue(os.path.exists(self.registry.groupPath("001")))


WORKER_CONF = """<ossec_config>
  <cluster>
    <name>wazuh</name>
    <node_name>{name}</node_name>
    <node_type>{type}</node_type>
    <key>9d273b53510fef702b54a92e9cffc82e</key>
    <port>1516</port>
    <bind_addr>0.0.0.0</bind_addr>
    <nodes><node>127.0.0.1</node></nodes>
    <hidden>no</hidden>
    <disabled>{disabled}</disabled>
  </cluster>
</ossec_config>
"""


class CommandTests(RegistryTestsMixin, SynchronousTestCase):
    def manage(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = run(["--home", self.home.root, *argv], out, err)
        return status, out.getvalue(), err.getvalue()

    def test_add(self) -> None:
        status, out, err = self.manage("-a", "10.0.0.9", "-n", "db", "-g", "databases")
        self.assertEqual((status, err), (0, ""))
        agent = self.registry.list()[-1]
        self.assertEqual(out, f"Agent added with ID 008 and key {agent.exported()}\n")
        self.assertEqual(base64.b64decode(agent.exported()).decode(), f"008 db 10.0.0.9 {agent.key}")
        self.assertEqual(_read(self.registry.groupPath("008")), b"databases\n")

    def test_addRefused(self) -> None:
        status, out, err = self.manage("-a", "any", "-n", "web-01")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("Cannot register the agent web-01", err)
        self.assertEqual(_read(self.keysPath), EXISTING)

    def test_addForced(self) -> None:
        status, out, err = self.manage("-a", "any", "-n", "web-01", "--force")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[0], "Agent 001 (web-01, 10.0.0.5) replaced.")
        self.assertTrue(out.splitlines()[1].startswith("Agent added with ID 008 and key "))

    def test_remove(self) -> None:
        self.assertEqual(self.manage("-r", "002"), (0, "Agent 002 (branch, 192.168.0.0/24) removed.\n", ""))
        status, out, err = self.manage("-r", "002")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("No agent with ID '002'", err)

    def test_list(self) -> None:
        status, out, err = self.manage("-l")
        self.assertEqual(status, 0)
        self.assertEqual(
            out,
            "ID   Name    IP\n"
            "001  web-01  10.0.0.5\n"
            "002  branch  192.168.0.0/24\n"
            "003  roamer  any\n"
            "Listing 3 agent(s).\n",
        )
        self.assertEqual(err.count("Warning: "), 1)
        self.assertIn("client.keys:5: the ID 'this' is not a number", err)

    def test_addNeedsName(self) -> None:
        """A usage mistake exits with argparse's status 2 and its usage text."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        e = self.assertRaises(SystemExit, self.manage, "-a", "any")
        self.assertEqual(e.code, 2)
        self.assertIn("-a needs the agent's name with -n NAME", stderr.getvalue())

    def test_worker(self) -> None:
        """A worker refuses to register or remove, and changes nothing."""
        _write(self.home.ossecConf, WORKER_CONF.format(name="w1", type="worker", disabled="no").encode())
        for argv in (("-a", "any", "-n", "new"), ("-r", "001")):
            self.assertEqual(self.manage(*argv), (1, "", WORKER_REFUSAL + "\n"))
        self.assertEqual(_read(self.keysPath), EXISTING)
        self.assertFalse(os.path.exists(self.home.path("queue")))
        self.assertEqual(self.manage("-l")[0], 0)

    def test_master(self) -> None:
        _write(self.home.ossecConf, WORKER_CONF.format(name="m", type="master", disabled="no").encode())
        self.assertEqual(self.manage("-a", "any", "-n", "new")[0], 0)

    def test_disabledCluster(self) -> None:
        _write(self.home.ossecConf, WORKER_CONF.format(name="w1", type="worker", disabled="yes").encode())
        self.assertEqual(self.manage("-a", "any", "-n", "new")[0], 0)

    def test_noClusterSection(self) -> None:
        _write(self.home.ossecConf, b"<ossec_config><global></global></ossec_config>\n")
        self.assertEqual(self.manage("-a", "any", "-n", "new")[0], 0)

    def test_brokenConfig(self) -> None:
        """A node that cannot tell whether it is a worker changes nothing."""
        _write(self.home.ossecConf, b"<ossec_config><cluster>\n")
        status, out, err = self.manage("-a", "any", "-n", "new")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("Cannot tell whether this node is a worker", err)
        self.assertEqual(_read(self.keysPath), EXISTING)
