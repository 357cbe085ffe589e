"""
Lab scenarios of restarts (issue 6), with real twistd nodes in the lab
(network namespaces when the machine allows, else loopback):

 - the master is killed (C{kill -9}) in the middle of a large integrity
   transfer and started again: the workers rejoin by themselves and end
   byte for byte like the master, and no worker ever holds a half-written
   file, not while the transfer runs, not while the master is down;
 - agents are registered on the master while a worker is down and while it
   starts again: the worker ends with every one of them.

What is judged is always what lies on disk (MD5s, temporary files) and the
logs; every wait is a bounded poll.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pytest

from lab.cluster import Lab
from lab.nodes import Node, wait_for
from lab.trees import INTEGRITY_OPTIONS as OPTIONS
from lab.trees import (
    RULESET,
    TEMPORARY_NAME,
    client_keys_of,
    copy_ruleset,
    manage,
    md5_or_none,
    md5_stream,
    synchronised_files,
    synchronised_paths,
    temporaries,
    total_size,
)

#: The big CDB list of the transfers: where it goes, and its size.
BIG_LIST = "etc/lists/lab-big-list"
BIG_SIZE = 32 * 1024 * 1024
LONG_BIG_SIZE = 128 * 1024 * 1024


# Files. ---------------------------------------------------------------------


def place_ruleset(home: Path) -> None:
    """
    The Wazuh ruleset under HOME/etc (etc/rules, etc/decoders, etc/lists);
    where the corpus is missing, 300 small rule and decoder files instead.
    """
    if RULESET.is_dir():
        copy_ruleset(home)
        return
    for n in range(150):
        for kind in ("rules", "decoders"):
            path = home / "etc" / kind / f"{n:04d}-lab_{kind}.xml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f'<group name="lab{n},">\n{os.urandom(4096).hex()}\n</group>\n')


def write_cdb_list(path: Path, size: int) -> str:
    """
    A CDB list of at least C{size} bytes (random ``KEY:VALUE`` lines, about
    half as big once compressed), written beside C{path} and renamed into
    place, so that the master never reads it half-written; its MD5.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent.parent / f"{path.name}.partial"
    digest = hashlib.md5()
    written = 0
    with open(partial, "wb") as f:
        while written < size:
            raw = os.urandom(12 << 15).hex()
            block = "".join(f"{raw[i:i + 16]}:{raw[i + 16:i + 24]}\n" for i in range(0, len(raw), 24)).encode()
            digest.update(block)
            f.write(block)
            written += len(block)
    os.replace(partial, path)
    return digest.hexdigest()


def register_agents_in_files(home: Path, count: int) -> None:
    """C{count} agents in HOME/etc/client.keys, each with its queue/agent-groups file."""
    groups = home / "queue" / "agent-groups"
    groups.mkdir(parents=True, exist_ok=True)
    lines = []
    for number in range(1, count + 1):
        agent_id = f"{number:03d}"
        lines.append(f"{agent_id} lab-agent-{agent_id} any {os.urandom(32).hex()}\n")
        (groups / agent_id).write_text("default\n")
    (home / "etc" / "client.keys").write_text("".join(lines))


class Watcher(threading.Thread):
    """
    Looks at the synchronised files of the workers over and over, for as
    long as the scenario runs: each must be, whole, one of the versions the
    master ever held (C{history}: relative path to the set of MD5s; the
    scenario adds a version before it writes it on the master).  A file
    written in place, a half-received file renamed into place, a file the
    master never had: each is recorded in C{violations}.  So is a file that
    disappears once a worker held it: the master deletes nothing in these
    scenarios, and a broken transfer must leave the previous files alone.
    """

    def __init__(self, homes: Sequence[Path], history: dict[str, set[str]], interval: float = 0.2) -> None:
        super().__init__(name="lab-restarts-watcher", daemon=True)
        self.homes = list(homes)
        self.history = history
        self.interval = interval
        self.violations: list[str] = []
        self.rounds = 0
        self._stopping = threading.Event()
        self._known: dict[tuple[int, int, int, int, int], str] = {}
        self._held: dict[Path, set[str]] = {home: set() for home in self.homes}

    def _md5(self, path: Path) -> str:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            # A renamed-in file has a new inode and ctime: each version is hashed once.
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if key in self._known:
                return self._known[key]
            md5 = md5_stream(f)
            after = os.fstat(f.fileno())
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == key[2:]:
            self._known[key] = md5
        return md5

    def check(self) -> None:
        """Look once at every worker's synchronised files."""
        for home in self.homes:
            held = set()
            for relpath, path in synchronised_paths(home):
                held.add(relpath)
                try:
                    md5 = self._md5(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # replaced between the listing and the read (or lost: seen next round)
                if md5 not in self.history.get(relpath, ()):
                    self.violations.append(
                        f"{home.name}:{relpath} held content the master never had (MD5 {md5},"
                        f" {path.stat().st_size if path.exists() else '?'} bytes)"
                    )
            lost = self._held[home] - held
            if lost:
                self.violations.append(f"{home.name} lost files it held: {sorted(lost)[:10]}")
            self._held[home] |= held
        self.rounds += 1

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.check()
            except Exception as e:  # the scenario's assertions report it
                self.violations.append(f"the watcher failed: {e!r}")
                return

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=60)
        assert not self.is_alive(), "the watcher did not stop"

    def __enter__(self) -> "Watcher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def assert_whole_versions(workers: Sequence[Node], history: dict[str, set[str]]) -> dict[str, dict[str, str]]:
    """
    Every synchronised file of every worker is, whole, a version the master
    held; no temporary file is left.  Returns each worker's files.
    """
    held = {}
    for worker in workers:
        files = synchronised_files(worker.home)
        wrong = {p: m for p, m in files.items() if m not in history.get(p, ())}
        assert not wrong, f"{worker.node_name} holds files the master never had (half-written?): {wrong}"
        left = temporaries(worker.home)
        assert not left, f"{worker.node_name} kept temporary files: {left}"
        held[worker.node_name] = files
    return held


def wait_in_sync(master: Node, workers: Sequence[Node], alive: Sequence[Node], timeout: float) -> dict[str, str]:
    """Wait until every worker's synchronised files are the master's (same paths, same MD5s)."""
    expected = synchronised_files(master.home)
    for worker in workers:
        last: list[set[str]] = [set()]

        def same() -> bool:
            files = synchronised_files(worker.home)
            last[0] = {p for p in set(files) | set(expected) if files.get(p) != expected.get(p)}
            return not last[0] and not temporaries(worker.home)

        try:
            wait_for(same, f"{worker.node_name} to hold the master's {len(expected)} files", timeout=timeout,
                     interval=0.3, alive=alive)
        except AssertionError as e:
            raise AssertionError(f"{e}; {len(last[0])} differ, e.g. {sorted(last[0])[:5]}") from None
    return expected


def master_spool_left(master: Node) -> list[str]:
    """What a killed master left in its queue/cluster besides its control socket (and the socket's lock)."""
    folder = master.home / "queue" / "cluster"
    return [p.name for p in folder.iterdir() if not p.name.startswith("c-internal.sock")] if folder.is_dir() else []


def kill_master_mid_transfer(
    lab: Lab, fraction: float, total: int, since: dict[str, int], alive: Sequence[Node]
) -> Node:
    """
    Once a worker's log says (after C{since}, each worker's log mark from
    before the master started) that a transfer started, and that worker has
    staged C{fraction} of C{total} bytes, C{kill -9} the master; the worker
    that was caught in the middle.
    """

    def started() -> Node | None:
        return next((w for w in lab.workers if "Integrity check: " in w.log_since(since[w.node_name])), None)

    wait_for(started, "a worker to log the start of a transfer", timeout=60, interval=0.02, alive=alive)

    def caught() -> Node | None:
        return next((w for w in lab.workers if total_size(temporaries(w.home)) >= fraction * total), None)

    worker = wait_for(caught, f"a worker to stage {fraction:.0%} of {total} bytes", timeout=60, interval=0.005,
                      alive=alive)
    assert worker is not None
    staged = total_size(temporaries(worker.home))
    lab.kill("master")
    print(f"\nmaster killed while {worker.node_name} had {staged} of {total} bytes staged")
    return worker


def master_down_checks(lab: Lab, caught: Node, history: dict[str, set[str]], since: dict[str, int]) -> None:
    """
    While the master is down: every worker sees it, drops its temporary
    files, and holds only whole versions of the master's files; the worker
    caught in the middle applied nothing of the broken transfer; the master
    left no spool behind.
    """
    for worker in lab.workers:
        worker.wait_log("Lost connection to master", since=since[worker.node_name], timeout=15)
    for worker in lab.workers:
        wait_for(lambda: not temporaries(worker.home), f"{worker.node_name} to remove its temporary files",
                 timeout=15, alive=[worker])
    assert "Received from master" not in caught.log_since(since[caught.node_name]), (
        f"{caught.node_name} applied a transfer the master was killed in the middle of"
    )
    assert_whole_versions(lab.workers, history)
    left = master_spool_left(lab.master)
    assert not left, f"the killed master left files in queue/cluster: {left}"


# 1. ------------------------------------------------------------------------


def test_master_killed_mid_transfer_workers_rejoin_and_end_identical(make_lab: Callable[..., Lab]) -> None:
    """
    Two fresh workers receive the real ruleset and a 32 MiB CDB list; the
    master is killed once a worker's log says the transfer started and that
    worker has staged a quarter of it.  While it is down, each worker holds
    only whole copies of the master's files (most likely none) and no
    temporary file; started again, the master takes both workers back
    without anyone restarting them, and they end with its files, MD5 for
    MD5.  A watcher checks all along that no worker ever holds a
    half-written file.
    """
    lab = make_lab(("worker1", "worker2"), options=OPTIONS)
    # The master's home before anything starts, so that the workers join fresh
    # and the transfer begins the moment they do.
    master_home = lab.base / "m"
    place_ruleset(master_home)
    write_cdb_list(master_home / BIG_LIST, BIG_SIZE)
    history = {p: {m} for p, m in synchronised_files(master_home).items()}
    total = sum((master_home / p).stat().st_size for p in history)

    with Watcher([lab.base / name for name in lab.workerNames], history) as watcher:
        lab.start()
        assert lab.master.home == master_home
        nodes = [lab.master, *lab.workers]
        since = {w.node_name: 0 for w in lab.workers}
        caught = kill_master_mid_transfer(lab, 0.25, total, since, alive=nodes)

        master_down_checks(lab, caught, history, since)
        print("while the master was down: " + ", ".join(
            f"{w.node_name} {len(synchronised_files(w.home))} of {len(history)} files" for w in lab.workers
        ))

        marks = {w.node_name: w.mark() for w in lab.workers}
        lab.restart("master").wait_ready()
        for worker in lab.workers:
            worker.wait_joined(since=marks[worker.node_name], timeout=30)
        wait_in_sync(lab.master, lab.workers, alive=nodes, timeout=60)
    watcher.check()  # once more, the thread stopped
    assert watcher.rounds > 5, "the watcher hardly looked"
    assert not watcher.violations, "\n".join(watcher.violations[:20])
    for worker in lab.workers:
        assert worker.running()
        assert worker.starts == 1, f"{worker.node_name} was restarted"


@pytest.mark.lab_long
def test_master_killed_again_and_again_mid_transfer(make_lab: Callable[..., Lab]) -> None:
    """
    Three fresh workers receive the ruleset, 3,000 agents (client.keys and
    their agent-groups files) and a 128 MiB CDB list.  Four times, the master
    is killed in the middle of a transfer (at 10%, 40%, 70% and 95% of what
    one worker is to receive), checked while down, and started again with a
    new version of the big list (and some agents' groups changed), so that
    every round moves a big file again.  The workers are never restarted;
    they end with the master's files, MD5 for MD5, and never hold anything
    but whole versions of the master's files.
    """
    lab = make_lab(("worker1", "worker2", "worker3"), options=OPTIONS)
    master_home = lab.base / "m"
    place_ruleset(master_home)
    register_agents_in_files(master_home, 3000)
    write_cdb_list(master_home / BIG_LIST, LONG_BIG_SIZE)
    history = {p: {m} for p, m in synchronised_files(master_home).items()}
    total = sum((master_home / p).stat().st_size for p in history)

    with Watcher([lab.base / name for name in lab.workerNames], history, interval=0.5) as watcher:
        lab.start()
        nodes = [lab.master, *lab.workers]
        since = {w.node_name: 0 for w in lab.workers}
        for round_, fraction in enumerate((0.10, 0.40, 0.70, 0.95)):
            caught = kill_master_mid_transfer(lab, fraction, total, since, alive=nodes)
            master_down_checks(lab, caught, history, since)

            # A new version of the big list, and new groups for some agents,
            # written while the master is down: the next round moves them.
            new_list = master_home / "lab-next-list"
            md5 = write_cdb_list(new_list, LONG_BIG_SIZE)
            history[BIG_LIST].add(md5)
            os.replace(new_list, master_home / BIG_LIST)
            for number in range(1 + round_ * 100, 101 + round_ * 100):
                relpath = f"queue/agent-groups/{number:03d}"
                content = f"default,lab-round-{round_}\n".encode()
                history[relpath].add(hashlib.md5(content).hexdigest())
                (master_home / relpath).write_bytes(content)
            total = LONG_BIG_SIZE + 100 * len(content)

            since = {w.node_name: w.mark() for w in lab.workers}
            lab.restart("master").wait_ready()
            for worker in lab.workers:
                worker.wait_joined(since=since[worker.node_name], timeout=30)
        wait_in_sync(lab.master, lab.workers, alive=nodes, timeout=240)
    watcher.check()
    assert not watcher.violations, "\n".join(watcher.violations[:20])
    assert all(worker.starts == 1 for worker in lab.workers)


# 7. ------------------------------------------------------------------------


def register_agents(master: Node, numbers: Iterable[int], parallel: int = 4) -> list[str]:
    """Register agents C{lab-agent-N} on the master with manage_agents, a few at a time; their IDs."""

    def one(number: int) -> str:
        result = manage(master, "-a", f"10.66.{number // 250}.{number % 250 + 1}", "-n", f"lab-agent-{number:03d}")
        assert result.returncode == 0, f"manage_agents exited {result.returncode}: {result.stderr}"
        added = re.match(r"Agent added with ID (\d+) and key ", result.stdout)
        assert added, result.stdout
        return added.group(1)

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, numbers))


def registered_ids(keys: str) -> list[str]:
    return [line.split()[0] for line in keys.splitlines() if line.strip() and not line.split()[1].startswith("!")]


def agent_files(node: Node) -> dict[str, str]:
    """{client.keys and each queue/agent-groups file: its content} of a node."""
    files = {"etc/client.keys": client_keys_of(node)}
    folder = node.home / "queue" / "agent-groups"
    if folder.is_dir():
        for path in folder.iterdir():
            if not TEMPORARY_NAME.match(path.name):
                try:
                    files[f"queue/agent-groups/{path.name}"] = path.read_text()
                except FileNotFoundError:
                    pass
    return files


def wait_agents_in_step(master: Node, workers: Sequence[Node], alive: Sequence[Node], timeout: float) -> None:
    """Wait until every worker's client.keys and agent-groups files are the master's."""
    expected = agent_files(master)
    for worker in workers:
        last: list[set[str]] = [set()]

        def same() -> bool:
            files = agent_files(worker)
            last[0] = {p for p in set(files) | set(expected) if files.get(p) != expected.get(p)}
            return not last[0]

        try:
            wait_for(same, f"{worker.node_name} to hold the master's agents", timeout=timeout, interval=0.3,
                     alive=alive)
        except AssertionError as e:
            raise AssertionError(f"{e}; {len(last[0])} files differ, e.g. {sorted(last[0])[:5]}") from None


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_agents_registered_while_a_worker_restarts_all_reach_it(make_lab: Callable[..., Lab], how: str) -> None:
    """
    Five agents are registered on the master and reach both workers; worker1
    is then killed (C{kill -9}) or stopped, 25 agents are registered while
    it is down and 25 more while it starts again.  worker1 rejoins, and ends
    with the master's client.keys byte for byte and every agent's
    queue/agent-groups file; so does worker2, which stayed up all along.
    """
    lab = make_lab(("worker1", "worker2"), options=OPTIONS).start()
    master = lab.master
    worker1, worker2 = lab.workers
    nodes = [master, worker1, worker2]
    ids = register_agents(master, range(1, 6))
    wait_agents_in_step(master, lab.workers, alive=nodes, timeout=20)

    if how == "kill":
        lab.kill("worker1")
    else:
        # twistd ends a clean stop by the signal that asked for it.
        assert worker1.stop() in (0, -signal.SIGTERM)
    ids += register_agents(master, range(6, 31))
    mark = worker1.mark()
    lab.restart("worker1")
    ids += register_agents(master, range(31, 56))
    worker1.wait_joined(since=mark, timeout=30)

    wait_agents_in_step(master, lab.workers, alive=nodes, timeout=30)
    keys = (master.home / "etc" / "client.keys").read_text()
    assert len(set(ids)) == 55 and sorted(registered_ids(keys)) == sorted(ids)
    for node in (master, *lab.workers):
        assert (node.home / "etc" / "client.keys").read_text() == keys, node.node_name
        groups = node.home / "queue" / "agent-groups"
        missing = [agent_id for agent_id in ids if md5_or_none(groups / agent_id) is None]
        assert not missing, f"{node.node_name} has no group file for the registered agents {missing}"
        assert all((groups / agent_id).read_text() == "default\n" for agent_id in ids), node.node_name
        assert not temporaries(node.home)
