"""The REST API's users file and C{cluster_api_users}, on real files."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

import wazuhcluster
from wazuhcluster.api import users as usersmodule
from wazuhcluster.api import users_cli
from wazuhcluster.api.users import (
    DEFAULT_COST,
    ApiUsers,
    ApiUsersError,
    PasswordHash,
    ScryptCost,
    usersPath,
)
from wazuhcluster.home import WazuhHome

#: A cost that makes hashing take microseconds; only tests may use it.
CHEAP = ScryptCost(n=16, r=1, p=1)

PASSWORD = "correct horse"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a test's child process if it is still running."""
    if process.poll() is None:
        process.kill()
        process.wait()


class UsersTestsMixin:
    """A home with no API users file yet, and its users at a cheap cost."""

    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))  # type: ignore[attr-defined]
        self.path = usersPath(self.home)
        self.users = ApiUsers(self.path, CHEAP)


class UsersTests(UsersTestsMixin, SynchronousTestCase):
    def test_path(self) -> None:
        self.assertEqual(self.path, os.path.join(self.home.root, "api", "configuration", "users.json"))
        self.assertEqual(ApiUsers.forHome(self.home), ApiUsers(self.path, DEFAULT_COST))

    def test_noFile(self) -> None:
        """A missing file means no users, and nobody is authenticated."""
        self.assertEqual(self.users.names(), [])
        self.assertFalse(self.users.verify("alice", PASSWORD))
        self.assertFalse(os.path.exists(os.path.dirname(self.path)))

    def test_addAndVerify(self) -> None:
        """The folders are made, the user is known and only its password passes."""
        self.users.add("alice", PASSWORD)
        self.assertTrue(self.users.verify("alice", PASSWORD))
        self.assertFalse(self.users.verify("alice", PASSWORD + "!"))
        self.assertFalse(self.users.verify("alice", ""))
        self.assertFalse(self.users.verify("Alice", PASSWORD))
        self.assertFalse(self.users.verify("bob", PASSWORD))
        self.assertEqual(self.users.names(), ["alice"])
        self.assertTrue(os.path.exists(self.path + ".lock"))

    def test_fileFormat(self) -> None:
        """
        Mode 0640, one self-describing hash per user, no password in clear,
        and a fresh salt for each even when the passwords are the same.
        """
        self.users.add("bob", PASSWORD)
        self.users.add("alice", PASSWORD)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)
        data = _read(self.path)
        self.assertNotIn(PASSWORD.encode(), data)
        self.assertTrue(data.endswith(b"}\n"))
        stored = json.loads(data)["users"]
        self.assertEqual(sorted(stored), ["alice", "bob"])
        hashes = [PasswordHash.parse(stored[name]) for name in ("alice", "bob")]
        for h in hashes:
            self.assertEqual((h.cost, len(h.salt), len(h.digest)), (CHEAP, 16, 32))
            self.assertRegex(stored["alice"], r"\Ascrypt\$16\$1\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\Z")
        self.assertNotEqual(hashes[0].salt, hashes[1].salt)
        self.assertNotEqual(hashes[0].digest, hashes[1].digest)

    def test_defaultCost(self) -> None:
        """Outside tests, passwords are hashed with n=2**14, r=8, p=1."""
        self.assertEqual(DEFAULT_COST, ScryptCost(2**14, 8, 1))
        users = ApiUsers.forHome(self.home)
        users.add("alice", PASSWORD)
        self.assertTrue(json.loads(_read(self.path))["users"]["alice"].startswith("scrypt$16384$8$1$"))
        self.assertTrue(users.verify("alice", PASSWORD))

    def test_parametersTravelWithTheHash(self) -> None:
        """A password hashed at another cost still verifies."""
        self.users.add("alice", PASSWORD)
        ApiUsers(self.path, ScryptCost(32, 2, 2)).add("bob", PASSWORD)
        self.assertTrue(json.loads(_read(self.path))["users"]["bob"].startswith("scrypt$32$2$2$"))
        for name in ("alice", "bob"):
            self.assertTrue(self.users.verify(name, PASSWORD))

    def test_unknownUserCostsTheSame(self) -> None:
        """
        An unknown user is hashed once, at the cost of a user in the file,
        so that the answer takes as long as for a known one.
        """
        costs = []
        derive = usersmodule._derive

        def counting(password: str, salt: bytes, cost: ScryptCost, length: int) -> bytes:
            costs.append(cost)
            return derive(password, salt, cost, length)

        self.patch(usersmodule, "_derive", counting)
        self.assertFalse(self.users.verify("alice", PASSWORD))
        self.assertEqual(costs, [CHEAP])
        ApiUsers(self.path, ScryptCost(32, 2, 1)).add("bob", PASSWORD)
        del costs[:]
        self.assertFalse(self.users.verify("alice", PASSWORD))
        self.assertTrue(self.users.verify("bob", PASSWORD))
        self.assertEqual(costs, [ScryptCost(32, 2, 1)] * 2)

    def test_setPassword(self) -> None:
        self.users.add("alice", PASSWORD)
        before = _read(self.path)
        self.users.setPassword("alice", "battery staple")
        self.assertNotEqual(_read(self.path), before)
        self.assertFalse(self.users.verify("alice", PASSWORD))
        self.assertTrue(self.users.verify("alice", "battery staple"))

    def test_remove(self) -> None:
        self.users.add("alice", PASSWORD)
        self.users.add("bob", PASSWORD)
        self.users.remove("alice")
        self.assertEqual(self.users.names(), ["bob"])
        self.assertFalse(self.users.verify("alice", PASSWORD))
        self.users.remove("bob")
        self.assertEqual(json.loads(_read(self.path)), {"users": {}})

    def test_namesSorted(self) -> None:
        for name in ("zoe", "Bob", "alice@example.com", "a.b-c_d", "0"):
            self.users.add(name, PASSWORD)
        self.assertEqual(self.users.names(), ["0", "Bob", "a.b-c_d", "alice@example.com", "zoe"])

    def test_otherKeysKept(self) -> None:
        """Top-level keys other than C{users} survive a change."""
        self.users.add("alice", PASSWORD)
        document = json.loads(_read(self.path))
        document["comment"] = "kept"
        _write(self.path, json.dumps(document).encode())
        self.users.add("bob", PASSWORD)
        self.assertEqual(json.loads(_read(self.path))["comment"], "kept")

    def test_refusals(self) -> None:
        """Each refusal is one sentence naming the problem, and changes nothing."""
        self.users.add("alice", PASSWORD)
        before = _read(self.path)
        for call, expected in (
            (lambda: self.users.add("alice", "other password"),
             "The API user alice already exists; change its password with passwd instead."),
            (lambda: self.users.setPassword("bob", PASSWORD),
             "There is no API user 'bob'; list them with cluster_api_users list."),
            (lambda: self.users.remove("bob"),
             "There is no API user 'bob'; list them with cluster_api_users list."),
            (lambda: self.users.add("bob", "short"),
             "Cannot add the API user 'bob': a password needs at least 8 characters."),
            (lambda: self.users.add("bob", "x" * 1025),
             "Cannot add the API user 'bob': a password has at most 1024 characters."),
            (lambda: self.users.setPassword("alice", "1234567"),
             "Cannot change the password of the API user 'alice': a password needs at least 8 characters."),
        ):
            self.assertEqual(str(self.assertRaises(ApiUsersError, call)), expected)
        for name in ("", "a" * 65, "a b", "a:b", "é", "a/b", "a\n"):
            e = self.assertRaises(ApiUsersError, self.users.add, name, PASSWORD)
            self.assertEqual(
                str(e),
                f"Cannot add the API user {name!r}: a user name is 1 to 64 characters among "
                f"letters, digits, '-', '_', '.' and '@'.",
            )
        self.assertEqual(_read(self.path), before)

    def test_bounds(self) -> None:
        """The longest name and the shortest and longest passwords pass."""
        self.users.add("a" * 64, "x" * 8)
        self.users.add("b", "y" * 1024)
        self.assertTrue(self.users.verify("a" * 64, "x" * 8))
        self.assertTrue(self.users.verify("b", "y" * 1024))
        self.assertFalse(self.users.verify("b", "y" * 1025))

    def test_checks(self) -> None:
        """The early checks refuse what L{add} and L{setPassword} would."""
        self.users.add("alice", PASSWORD)
        self.users.checkNew("bob")
        self.users.checkExisting("alice")
        self.assertRaises(ApiUsersError, self.users.checkNew, "alice")
        self.assertRaises(ApiUsersError, self.users.checkNew, "a b")
        self.assertRaises(ApiUsersError, self.users.checkExisting, "bob")

    def test_unicodePassword(self) -> None:
        self.users.add("alice", "pässwörd ✓")
        self.assertTrue(self.users.verify("alice", "pässwörd ✓"))
        self.assertFalse(self.users.verify("alice", "passwörd ✓"))

    def test_writeFails(self) -> None:
        """A failed write leaves the file as it was."""
        self.users.add("alice", PASSWORD)
        before = _read(self.path)

        def full(path: str, data: bytes, mode: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.patch(usersmodule, "writeFileAtomically", full)
        self.assertRaises(OSError, self.users.add, "bob", PASSWORD)
        self.assertEqual(_read(self.path), before)

    def test_concurrentProcesses(self) -> None:
        """Four processes adding five users each at the same time lose none."""
        go = os.path.abspath(self.mktemp())
        script = textwrap.dedent(
            """
            import os, sys, time
            from wazuhcluster.api.users import ApiUsers, ScryptCost
            path, go, worker = sys.argv[1:]
            users = ApiUsers(path, ScryptCost(16, 1, 1))
            open(f"{go}.ready{worker}", "w").close()
            while not os.path.exists(go):
                time.sleep(0.001)
            for i in range(5):
                users.add(f"user{worker}-{i}", "password")
            """
        )
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(wazuhcluster.__file__)))
        processes = [
            subprocess.Popen([sys.executable, "-c", script, self.path, go, str(worker)], env=env)
            for worker in range(4)
        ]
        for p in processes:
            self.addCleanup(_stop, p)
        # Start them together, once all are ready: each waits for the go file.
        deadline = time.monotonic() + 30
        while not all(os.path.exists(f"{go}.ready{w}") for w in range(4)):
            self.assertLess(time.monotonic(), deadline, "the processes did not start")
            time.sleep(0.005)
        _write(go, b"")
        self.assertEqual([p.wait(timeout=30) for p in processes], [0] * 4)
        expected = sorted(f"user{w}-{i}" for w in range(4) for i in range(5))
        self.assertEqual(self.users.names(), expected)
        self.assertTrue(all(self.users.verify(name, "password") for name in expected))


#: Users files that must not be guessed at, and the problem each is named by.
SALT = "AAAAAAAAAAAAAAAAAAAAAA=="
DIGEST = "A" * 43 + "="
DAMAGED = [
    (b"not json", "it is not JSON"),
    (b"\xff\xfe{}", "it is not JSON"),
    (b"", "it is not JSON"),
    (b"[]", 'it is not an object with a "users" object'),
    (b"{}", 'it is not an object with a "users" object'),
    (b'{"users": ["alice"]}', 'it is not an object with a "users" object'),
    (b'{"users": {}, "users": {}}', "the key 'users' appears twice"),
    (b'{"users": {"a b": "x"}}', "the user name 'a b' is not valid"),
    (b'{"users": {"alice": 5}}', "the password hash of user alice is not a string"),
    (b'{"users": {"alice": "plain password"}}', "the password hash of user alice is not of the form"),
    (f'{{"users": {{"alice": "bcrypt$16$1$1${SALT}${DIGEST}"}}}}'.encode(), "is not of the form"),
    (f'{{"users": {{"alice": "scrypt$16$1${SALT}${DIGEST}"}}}}'.encode(), "is not of the form"),
    (f'{{"users": {{"alice": "scrypt$x$1$1${SALT}${DIGEST}"}}}}'.encode(), "parameters that are not numbers"),
    (f'{{"users": {{"alice": "scrypt$-16$1$1${SALT}${DIGEST}"}}}}'.encode(), "parameters that are not numbers"),
    (f'{{"users": {{"alice": "scrypt$24$1$1${SALT}${DIGEST}"}}}}'.encode(), "out of range (n=24, r=1, p=1)"),
    (f'{{"users": {{"alice": "scrypt$16$0$1${SALT}${DIGEST}"}}}}'.encode(), "out of range"),
    (f'{{"users": {{"alice": "scrypt$2097152$8$1${SALT}${DIGEST}"}}}}'.encode(), "out of range"),
    (f'{{"users": {{"alice": "scrypt$16$1$1$!!!!${DIGEST}"}}}}'.encode(), "not base64"),
    (f'{{"users": {{"alice": "scrypt$16$1$1${SALT}$AAA"}}}}'.encode(), "not base64"),
    (f'{{"users": {{"alice": "scrypt$16$1$1$AAAA${DIGEST}"}}}}'.encode(), "of the wrong length"),
]


class DamagedFileTests(UsersTestsMixin, SynchronousTestCase):
    def test_damaged(self) -> None:
        """
        Every use of a damaged file is refused with a sentence naming the file
        and the problem; nobody is authenticated and nothing is written.
        """
        for data, problem in DAMAGED:
            _write(self.path, data)
            for call in (
                lambda: self.users.add("bob", PASSWORD),
                lambda: self.users.setPassword("alice", PASSWORD),
                lambda: self.users.remove("alice"),
                self.users.names,
                lambda: self.users.verify("alice", PASSWORD),
                lambda: self.users.verify("bob", PASSWORD),
            ):
                message = str(self.assertRaises(ApiUsersError, call))
                self.assertTrue(message.startswith(f"The API users file {self.path} is damaged: "), message)
                self.assertIn(problem, message)
                self.assertTrue(message.endswith("; fix it, or move it away and add the users again."))
            self.assertEqual(_read(self.path), data)

    def test_oneBadUserDamagesAll(self) -> None:
        """A bad entry stops everyone's logins, not only its own user's."""
        self.users.add("alice", PASSWORD)
        document = json.loads(_read(self.path))
        document["users"]["bob"] = "scrypt$16$1$1$AAAA$AAAA"
        _write(self.path, json.dumps(document).encode())
        self.assertRaises(ApiUsersError, self.users.verify, "alice", PASSWORD)

    def test_unreadable(self) -> None:
        """A users file that cannot be read is named, with the reason."""
        os.makedirs(self.path)
        for call in (self.users.names, lambda: self.users.verify("alice", PASSWORD)):
            message = str(self.assertRaises(ApiUsersError, call))
            self.assertTrue(message.startswith(f"Cannot read the API users file {self.path}: "), message)
            self.assertTrue(message.endswith("; check its permissions."))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class CommandTests(SynchronousTestCase):
    """C{cluster_api_users}, at the real hashing cost."""

    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        self.users = ApiUsers.forHome(self.home)

    def command(self, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = users_cli.run(["--home", self.home.root, *argv], out, err, stdin or io.StringIO(""))
        return status, out.getvalue(), err.getvalue()

    def test_add(self) -> None:
        """The password is one line of standard input, without its line end."""
        self.assertEqual(self.command("add", "alice", stdin=io.StringIO(PASSWORD + "\nignored\n")),
                         (0, "User alice added.\n", ""))
        self.assertTrue(self.users.verify("alice", PASSWORD))
        self.assertEqual(self.command("add", "bob", stdin=io.StringIO("windows line\r\n")),
                         (0, "User bob added.\n", ""))
        self.assertEqual(self.command("add", "carol", stdin=io.StringIO("no line end")),
                         (0, "User carol added.\n", ""))
        self.assertTrue(self.users.verify("bob", "windows line"))
        self.assertTrue(self.users.verify("carol", "no line end"))

    def test_passwdRemoveList(self) -> None:
        self.users = ApiUsers(self.users.path, CHEAP)
        self.users.add("bob", PASSWORD)
        self.users.add("alice", PASSWORD)
        self.assertEqual(self.command("list"), (0, "alice\nbob\n", ""))
        self.assertEqual(self.command("passwd", "alice", stdin=io.StringIO("battery staple\n")),
                         (0, "Password of alice changed.\n", ""))
        self.assertTrue(self.users.verify("alice", "battery staple"))
        self.assertEqual(self.command("remove", "bob"), (0, "User bob removed.\n", ""))
        self.assertEqual(self.command("list"), (0, "alice\n", ""))

    def test_listEmpty(self) -> None:
        self.assertEqual(self.command("list"), (0, "", ""))

    def test_terminal(self) -> None:
        """On a terminal the password is asked twice."""
        answers = [PASSWORD, PASSWORD]
        prompts = []

        def getpass(prompt: str) -> str:
            prompts.append(prompt)
            return answers.pop(0)

        self.patch(users_cli, "getpass", getpass)
        self.assertEqual(self.command("add", "alice", stdin=_Terminal()), (0, "User alice added.\n", ""))
        self.assertEqual(prompts, ["New password of alice: ", "The new password of alice again: "])
        self.assertTrue(self.users.verify("alice", PASSWORD))

    def test_terminalMismatch(self) -> None:
        answers = [PASSWORD, PASSWORD + "x"]
        self.patch(users_cli, "getpass", lambda prompt: answers.pop(0))
        self.assertEqual(
            self.command("add", "alice", stdin=_Terminal()),
            (1, "", "Error: The two passwords differ; nothing changed.\n"),
        )
        self.assertEqual(self.users.names(), [])

    def test_terminalInterrupted(self) -> None:
        def interrupted(prompt: str) -> str:
            raise KeyboardInterrupt()

        self.patch(users_cli, "getpass", interrupted)
        self.assertEqual(
            self.command("add", "alice", stdin=_Terminal()),
            (1, "", "Error: No password was given; nothing changed.\n"),
        )

    def test_errors(self) -> None:
        """Refusals go to standard error as one sentence, with status 1, before any password is read."""
        self.users = ApiUsers(self.users.path, CHEAP)
        self.users.add("alice", PASSWORD)
        before = _read(self.users.path)
        for argv, stdin, message in (
            (("add", "alice"), PASSWORD, "The API user alice already exists; change its password with passwd instead."),
            (("add", "a b"), PASSWORD, "Cannot add the API user 'a b': a user name is 1 to 64 characters "
                                       "among letters, digits, '-', '_', '.' and '@'."),
            (("add", "bob"), "short\n", "The password of bob was refused: a password needs at least "
                                        "8 characters; nothing changed."),
            (("add", "bob"), "", "Standard input is empty: give the password as one line, or run the "
                                 "command in a terminal."),
            (("passwd", "bob"), PASSWORD, "There is no API user 'bob'; list them with cluster_api_users list."),
            (("remove", "bob"), "", "There is no API user 'bob'; list them with cluster_api_users list."),
        ):
            stream = io.StringIO(stdin)
            self.assertEqual(self.command(*argv, stdin=stream), (1, "", f"Error: {message}\n"))
            if stdin == PASSWORD:
                self.assertEqual(stream.tell(), 0, "the password was read before refusing")
        self.assertEqual(_read(self.users.path), before)

    def test_damagedFile(self) -> None:
        _write(self.users.path, b"not json")
        for argv in (("list",), ("add", "bob"), ("passwd", "alice"), ("remove", "alice")):
            status, out, err = self.command(*argv, stdin=io.StringIO(PASSWORD))
            self.assertEqual((status, out), (1, ""))
            self.assertTrue(err.startswith(f"Error: The API users file {self.users.path} is damaged: "), err)

    def test_writeFails(self) -> None:
        def full(path: str, data: bytes, mode: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.patch(usersmodule, "writeFileAtomically", full)
        self.assertEqual(
            self.command("add", "alice", stdin=io.StringIO(PASSWORD)),
            (1, "", f"Error: cannot change the API users file {self.users.path}: No space left on device; "
                    "check the folder's permissions and free space.\n"),
        )

    def test_homeFromEnvironment(self) -> None:
        """Without --home, C{$WAZUH_HOME}, else /var/ossec."""
        self.patch(os, "environ", dict(os.environ, WAZUH_HOME=self.home.root))
        self.assertEqual(users_cli.parser().parse_args(["list"]).home, self.home.root)
        del os.environ["WAZUH_HOME"]
        self.assertEqual(users_cli.parser().parse_args(["list"]).home, "/var/ossec")

    def test_usage(self) -> None:
        """A usage mistake exits with argparse's status 2."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        for argv in ((), ("add",), ("rename", "alice")):
            e = self.assertRaises(SystemExit, self.command, *argv)
            self.assertEqual(e.code, 2)
        self.assertIn("usage: cluster_api_users", stderr.getvalue())
