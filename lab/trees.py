"""
What the end-to-end tests share about the files in the nodes' homes: the
synchronised folders and what they hold, the daemon's temporary files,
MD5s, the Wazuh ruleset beside the checkout, the fast cycles of the
synchronisations, and the agent commands (``manage_agents``, the
C{agentinfo} helper, C{cluster_control -a}) run on a node.

Every wait is a bounded poll (L{wait_for}), every loop bounded in count.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

from .nodes import FAST_OPTIONS, Node, wait_for

#: The checkout (the folder that holds C{lab/} and C{wazuhcluster/}).
REPOSITORY = Path(__file__).resolve().parents[1]

#: The real Wazuh 4.9 ruleset (rules/, decoders/, lists/), beside the checkout.
RULESET = REPOSITORY.parent / "shared" / "corpus" / "wazuh-ruleset"

#: Fast integrity cycles; a stalled transfer gives up after 20 s rather than Wazuh's 120.
INTEGRITY_OPTIONS: dict[str, float | int] = {
    **FAST_OPTIONS,
    "cluster.sync_integrity": 1,
    "cluster.recalculate_integrity": 1,
    "cluster.timeout_receiving_file": 20,
}

#: Fast integrity cycles, and the workers' agent statuses sent every half second.
AGENT_OPTIONS: dict[str, float | int] = {
    **FAST_OPTIONS,
    "cluster.sync_integrity": 1,
    "cluster.recalculate_integrity": 1,
    "cluster.sync_agent_info": 0.5,
}

#: The synchronised folders of the table (etc/client.keys comes on top).
SYNC_FOLDERS = (
    "etc/shared",
    "var/multigroups",
    "etc/rules",
    "etc/decoders",
    "etc/lists",
    "queue/agent-groups",
)

#: What the stager names its temporary files (wazuhcluster/sync/stager.py).
TEMPORARY_NAME = re.compile(r"\.wazuhcluster-[0-9a-f]+\.tmp\Z")

#: manage_agents, as the brief of issue 6 runs it (``--home HOME`` and the action follow).
MANAGE_AGENTS = [
    sys.executable, "-c", "import sys; from wazuhcluster.agents.manage import main; main(sys.argv[1:])",
]

#: The blocks a file is read in, and the most of them read from one file (1 TiB).
BLOCK_SIZE = 1 << 20
MOST_BLOCKS = 1 << 20


# Files. ---------------------------------------------------------------------


def md5_stream(f: BinaryIO) -> str:
    """The MD5 of what is left to read in the open binary file C{f}."""
    digest = hashlib.md5()
    for _ in range(MOST_BLOCKS):
        block = f.read(BLOCK_SIZE)
        if not block:
            return digest.hexdigest()
        digest.update(block)
    raise AssertionError(f"{f.name} is larger than the {MOST_BLOCKS * BLOCK_SIZE} bytes a test hashes")


def md5_file(path: Path) -> str:
    """The MD5 of the file at C{path}."""
    with open(path, "rb") as f:
        return md5_stream(f)


def md5_or_none(path: Path) -> str | None:
    """L{md5_file}, or C{None} where there is no file (nor folder on the way)."""
    try:
        return md5_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def put(home: Path, relpath: str, data: bytes | str, mode: int = 0o644, mtime_ns: int | None = None) -> str:
    """
    Write a file under C{home}, in place, with C{mode} and (if given) the
    mtime C{mtime_ns}; its MD5.
    """
    path = home / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return md5_file(path)


def put_renamed(home: Path, relpath: str, data: bytes | str) -> str:
    """
    Write a file under C{home} through a rename, as an editor would (a node
    never reads it half-written); its MD5.
    """
    path = home / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f"{path.name}.lab-new"
    staging.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(staging, path)
    return md5_file(path)


def client_keys(agents: Iterable[tuple[str, str, str]]) -> str:
    """A client.keys: one ``ID NAME IP KEY`` line per (ID, name, IP), KEY 64 random hex characters."""
    return "".join(f"{agent_id} {name} {ip} {secrets.token_hex(32)}\n" for agent_id, name, ip in agents)


def copy_ruleset(home: Path) -> dict[str, str]:
    """
    Copy L{RULESET} under HOME/etc (etc/rules, etc/decoders, etc/lists), each
    file writable; {relative path: MD5} of the copies.
    """
    files: dict[str, str] = {}
    for folder, _, names in os.walk(RULESET):
        for name in names:
            source = Path(folder, name)
            relpath = "etc/" + source.relative_to(RULESET).as_posix()
            target = home / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            target.chmod(0o644)  # the corpus is read-only; the master's copy need not be
            files[relpath] = md5_file(target)
    return files


# The synchronised files of a home. ------------------------------------------


def temporaries(root: Path) -> list[Path]:
    """The daemon's temporary files anywhere under C{root}."""
    return [
        Path(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if TEMPORARY_NAME.match(name)
    ]


def total_size(paths: Iterable[Path]) -> int:
    """How many bytes the files of C{paths} hold now; a file gone meanwhile counts for none."""
    size = 0
    for path in paths:
        try:
            size += path.stat().st_size
        except FileNotFoundError:
            pass
    return size


def synchronised_paths(home: Path) -> Iterable[tuple[str, Path]]:
    """
    Every file under the synchronised folders of C{home}, and its
    etc/client.keys, as (relative path, path); the daemon's temporary files
    are left out (L{temporaries} finds those).
    """
    keys = home / "etc" / "client.keys"
    if keys.is_file():
        yield "etc/client.keys", keys
    for folder in SYNC_FOLDERS:
        for parent, _, names in os.walk(home / folder):
            for name in names:
                if not TEMPORARY_NAME.match(name):
                    path = Path(parent, name)
                    yield path.relative_to(home).as_posix(), path


def synchronised_files(home: Path) -> dict[str, str]:
    """{relative path: MD5} of L{synchronised_paths}; a file gone meanwhile is left out."""
    files = {}
    for relpath, path in synchronised_paths(home):
        md5 = md5_or_none(path)
        if md5 is not None:
            files[relpath] = md5
    return files


def has_files(home: Path, expected: dict[str, str]) -> bool:
    """Whether every file of C{expected} ({path: MD5}) is under C{home} with that MD5."""
    return all(md5_or_none(home / relpath) == md5 for relpath, md5 in expected.items())


def wait_synced(workers: Sequence[Node], expected: dict[str, str], alive: Sequence[Node], timeout: float = 20) -> None:
    """Wait until every worker holds the files of C{expected} ({path: MD5}); others may be there too."""
    for worker in workers:
        wait_for(
            lambda: has_files(worker.home, expected),
            f"{worker.node_name} to hold the master's {len(expected)} files",
            timeout=timeout,
            interval=0.2,
            alive=alive,
        )


# Agents. --------------------------------------------------------------------


def client_keys_of(node: Node) -> str:
    """The text of C{node}'s etc/client.keys; empty where there is none."""
    path = node.home / "etc" / "client.keys"
    return path.read_text() if path.exists() else ""


def manage(node: Node, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage_agents --home HOME ARGUMENTS`` on C{node} (nothing on its stdin)."""
    return subprocess.run(
        [*MANAGE_AGENTS, "--home", str(node.home), *arguments],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def agent_keep_alive(node: Node, name: str, ip: str, *extra: str) -> None:
    """Write an agent's status on C{node} with the documented helper (C{python -m wazuhcluster.agents.agentinfo})."""
    result = subprocess.run(
        [sys.executable, "-m", "wazuhcluster.agents.agentinfo", "--home", str(node.home), name, ip, *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def control_agents(node: Node, *filters: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """C{cluster_control -a FILTERS} on C{node}: ID -> (name, status, node), and the last line."""
    result = node.control("-a", *filters)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    assert len(rules) >= 3 and lines[rules[0] + 1].split() == ["ID", "Address", "Name", "Status", "Node"], (
        result.stdout
    )
    table = {}
    for line in lines[rules[1] + 1 : rules[2]]:
        cells = line.split()
        table[cells[0]] = (cells[2], " ".join(cells[3:-1]), cells[-1])
    return table, lines[-1]
