"""
The users of the REST API and their passwords, kept in the node's home.

The users file is C{HOME/api/configuration/users.json} (mode 0640)::

    {"users": {"alice": "scrypt$16384$8$1$<salt>$<hash>"}}

Each password is stored as its C{scrypt} hash with the parameters it was made
with (n, r, p), a random 16-byte salt and the 32-byte hash, both in base64,
so that new passwords can get a higher cost later while old ones still
verify.  The cost is n=2**14, r=8, p=1 (16 MiB of memory): one verification
took 50 ms (median of 20; 47 to 62 ms) on the 2-CPU machine this was written
on, with Python 3.11 and OpenSSL: slow enough to make guessing expensive, fast
enough for an API that checks every request.  The API calls L{ApiUsers.verify} from a
thread pool of its own and caches the answer briefly (L{wazuhcluster.api.authn}).

Checking a user who does not exist spends the same work as checking one who
does, so that the time of an answer does not tell which users exist.

Changes read the file, change it and write it back atomically under an
exclusive C{flock} of C{users.json.lock}, beside it (the file itself is
replaced on every write, so it cannot hold the lock), so that concurrent
C{cluster_api_users} runs never lose each other's changes.  Readers take no
lock.

A missing file means no users.  A damaged file (not JSON, the wrong shape,
a hash that cannot be decoded) is never guessed at: reading it for a change
or a listing raises L{ApiUsersError}, and L{ApiUsers.verify} raises it too,
so that nobody is authenticated; L{wazuhcluster.api.authn} logs that error
and refuses the login.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
from typing import Any, Iterator

from attrs import frozen

from ..files import writeFileAtomically
from ..home import WazuhHome

#: Mode of the users file: the API's group may read it, nobody else.
USERS_FILE_MODE = 0o640

#: Bounds of user names and passwords, as the operator is told.
MAX_NAME_LENGTH = 64
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,%d}" % MAX_NAME_LENGTH)

#: Name of the hashing scheme, the first field of every stored hash.
SCHEME = "scrypt"

_SALT_LENGTH = 16
_HASH_LENGTH = 32


class ApiUsersError(Exception):
    """A change refused or a users file that cannot be used; the message is a sentence for the operator."""


@frozen
class ScryptCost:
    """
    The C{scrypt} parameters of new passwords.  Only tests lower them;
    stored hashes carry their own, so raising them later is safe.
    """

    n: int = 2**14
    r: int = 8
    p: int = 1


#: The cost of every password set outside tests.
DEFAULT_COST = ScryptCost()


@frozen
class PasswordHash:
    """One stored password: the C{scrypt} parameters, the salt and the hash."""

    cost: ScryptCost
    salt: bytes
    digest: bytes

    @classmethod
    def make(cls, password: str, cost: ScryptCost) -> "PasswordHash":
        """The hash of C{password} with a fresh random salt."""
        salt = os.urandom(_SALT_LENGTH)
        return cls(cost, salt, _derive(password, salt, cost, _HASH_LENGTH))

    @classmethod
    def parse(cls, text: object) -> "PasswordHash":
        """
        The hash stored as C{text}; C{ValueError} naming what is wrong when
        it is not one this module could have written.
        """
        if not isinstance(text, str):
            raise ValueError("is not a string")
        fields = text.split("$")
        if len(fields) != 6 or fields[0] != SCHEME:
            raise ValueError(f"is not of the form {SCHEME}$N$R$P$SALT$HASH")
        if not all(f.isdigit() and f.isascii() and len(f) <= 8 for f in fields[1:4]):
            raise ValueError("has scrypt parameters that are not numbers")
        n, r, p = (int(f) for f in fields[1:4])
        if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
                and 128 * n * r <= 2**28):
            raise ValueError(f"has scrypt parameters out of range (n={n}, r={r}, p={p})")
        try:
            salt = base64.b64decode(fields[4], validate=True)
            digest = base64.b64decode(fields[5], validate=True)
        except ValueError:
            raise ValueError("has a salt or hash that is not base64") from None
        if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
            raise ValueError("has a salt or hash of the wrong length")
        return cls(ScryptCost(n, r, p), salt, digest)

    def serialise(self) -> str:
        """The text stored in the users file."""
        c = self.cost
        return "$".join((
            SCHEME, str(c.n), str(c.r), str(c.p),
            base64.b64encode(self.salt).decode("ascii"),
            base64.b64encode(self.digest).decode("ascii"),
        ))

    def matches(self, password: str) -> bool:
        """Whether C{password} is the one hashed (in constant time once hashed)."""
        return hmac.compare_digest(_derive(password, self.salt, self.cost, len(self.digest)), self.digest)


def _derive(password: str, salt: bytes, cost: ScryptCost, length: int) -> bytes:
    """The slow part: C{scrypt} of the password's UTF-8 bytes."""
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=length,
        # OpenSSL's default ceiling (32 MiB) would refuse higher costs.
        maxmem=128 * cost.r * (cost.n + cost.p + 2) + 2**20,
    )


def nameProblem(name: str) -> str | None:
    """Why C{name} cannot be a user name, or C{None} if it can."""
    if _NAME.fullmatch(name) is None:
        return (
            f"a user name is 1 to {MAX_NAME_LENGTH} characters among letters, "
            f"digits, '-', '_', '.' and '@'"
        )
    return None


def passwordProblem(password: str) -> str | None:
    """Why C{password} cannot be a password, or C{None} if it can."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    return None


def usersPath(home: WazuhHome) -> str:
    """The API users file of the node at C{home}."""
    return home.path("api", "configuration", "users.json")


@frozen
class ApiUsers:
    """
    The API users of one users file.  C{cost} is the C{scrypt} cost of
    passwords set from now on; leave it alone outside tests.
    """

    path: str
    cost: ScryptCost = DEFAULT_COST

    @classmethod
    def forHome(cls, home: WazuhHome) -> "ApiUsers":
        """The API users of the node at C{home}."""
        return cls(usersPath(home))

    @property
    def lockPath(self) -> str:
        return self.path + ".lock"

    def names(self) -> list[str]:
        """The user names, sorted."""
        return sorted(self._read()[1])

    def verify(self, name: str, password: str) -> bool:
        """
        Whether C{name} is a user whose password is C{password}.  Blocking
        and slow on purpose: call it from a thread.  An unknown user costs
        the same work as a known one.  A damaged or unreadable users file
        raises L{ApiUsersError} (nobody is authenticated).
        """
        _, users = self._read()
        stored = users.get(name)
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        if stored is None:
            # The same work as for a user: the parameters of one in the file.
            cost = users[min(users)].cost if users else self.cost
            _derive(password, b"\0" * _SALT_LENGTH, cost, _HASH_LENGTH)
            return False
        return stored.matches(password)

    def checkNew(self, name: str) -> None:
        """
        Raise L{ApiUsersError} if L{add} would refuse C{name} (not valid, or
        taken), to refuse before asking for a password; L{add} checks again.
        """
        _refuseName(name)
        _refuseExisting(name, self._read()[1])

    def checkExisting(self, name: str) -> None:
        """Raise L{ApiUsersError} if there is no user C{name}; L{setPassword} checks again."""
        _refuseUnknown(name, self._read()[1])

    def add(self, name: str, password: str) -> None:
        """Add user C{name} with C{password}; an existing user is refused."""
        _refuseName(name)
        problem = passwordProblem(password)
        if problem is not None:
            raise ApiUsersError(f"Cannot add the API user {name!r}: {problem}.")
        hashed = PasswordHash.make(password, self.cost)  # slow: before taking the lock
        with self._locked():
            document, users = self._read()
            _refuseExisting(name, users)
            users[name] = hashed
            self._write(document, users)

    def setPassword(self, name: str, password: str) -> None:
        """Give user C{name} the password C{password}; an unknown user is refused."""
        problem = passwordProblem(password)
        if problem is not None:
            raise ApiUsersError(f"Cannot change the password of the API user {name!r}: {problem}.")
        hashed = PasswordHash.make(password, self.cost)  # slow: before taking the lock
        with self._locked():
            document, users = self._read()
            _refuseUnknown(name, users)
            users[name] = hashed
            self._write(document, users)

    def remove(self, name: str) -> None:
        """Remove user C{name}; an unknown user is refused."""
        with self._locked():
            document, users = self._read()
            _refuseUnknown(name, users)
            del users[name]
            self._write(document, users)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the users file's lock, waiting for any other process holding it."""
        os.makedirs(os.path.dirname(self.lockPath), mode=0o750, exist_ok=True)
        fd = os.open(self.lockPath, os.O_RDWR | os.O_CREAT, USERS_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> tuple[dict[str, Any], dict[str, PasswordHash]]:
        """
        The whole document (other top-level keys are kept on writes) and
        the users in it; L{ApiUsersError} for a damaged or unreadable file.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {"users": {}}, {}
        except OSError as e:
            raise ApiUsersError(
                f"Cannot read the API users file {self.path}: {e.strerror or e}; check its permissions."
            ) from None
        try:
            document = json.loads(data.decode("utf-8"), object_pairs_hook=_noDuplicates)
        except (UnicodeDecodeError, ValueError) as e:
            raise self._damaged(f"it is not JSON ({e})") from None
        if not isinstance(document, dict) or not isinstance(document.get("users"), dict):
            raise self._damaged('it is not an object with a "users" object')
        users = {}
        for name, text in document["users"].items():
            if nameProblem(name) is not None:
                raise self._damaged(f"the user name {name!r} is not valid")
            try:
                users[name] = PasswordHash.parse(text)
            except ValueError as e:
                raise self._damaged(f"the password hash of user {name} {e}") from None
        return document, users

    def _damaged(self, problem: str) -> ApiUsersError:
        return ApiUsersError(
            f"The API users file {self.path} is damaged: {problem}; fix it, or move it "
            f"away and add the users again."
        )

    def _write(self, document: dict[str, Any], users: dict[str, PasswordHash]) -> None:
        """Replace the users file, all or nothing."""
        document = dict(document, users={name: users[name].serialise() for name in sorted(users)})
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        writeFileAtomically(self.path, data, USERS_FILE_MODE)


def _refuseName(name: str) -> None:
    problem = nameProblem(name)
    if problem is not None:
        raise ApiUsersError(f"Cannot add the API user {name!r}: {problem}.")


def _refuseExisting(name: str, users: dict[str, PasswordHash]) -> None:
    if name in users:
        raise ApiUsersError(
            f"The API user {name} already exists; change its password with passwd instead."
        )


def _refuseUnknown(name: str, users: dict[str, PasswordHash]) -> None:
    if name not in users:
        raise ApiUsersError(f"There is no API user {name!r}; list them with cluster_api_users list.")


def _noDuplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (which of them would count?)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result
