"""
End-to-end tests of the integrity synchronisation with real processes: a
master and workers started with ``twistd -n wazuhcluster`` on 127.0.0.1
(and, for the hostile-master test, a master started from the project's own
code with a doctored bundle writer), their homes under C{tmp_path}.

What is checked is always the end state on disk (MD5s, modes, mtimes,
inodes, the set of files in each home), the logs and ``cluster_control``.
Every wait is a bounded poll (L{nodes.wait_for}); the cycles run fast
(C{cluster.sync_integrity=1}, C{cluster.recalculate_integrity=1}).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
import statistics
import time
from pathlib import Path

import pytest

from lab.trees import INTEGRITY_OPTIONS as OPTIONS
from lab.trees import (
    RULESET,
    client_keys,
    copy_ruleset,
    has_files,
    md5_file,
    md5_or_none,
    put,
    synchronised_paths,
    temporaries,
    total_size,
    wait_synced,
)

from .nodes import Cluster, Node, hostile_master, never, wait_for, wazuh_time

needs_ruleset = pytest.mark.skipif(
    not RULESET.is_dir(),
    reason=f"the Wazuh ruleset corpus is not at {RULESET} (../shared/corpus/wazuh-ruleset beside the checkout)",
)

#: What the daemon itself writes in a home, whatever the synchronisation does.
DAEMON_FILES = ("logs/", "queue/cluster/", "var/run/", "etc/cluster-node.", "stdout.", "stderr.")

#: Size of the file a transfer is killed in the middle of (incompressible).
BIG_SIZE = 64 * 1024 * 1024


# Files. ---------------------------------------------------------------------


def place_ruleset(home: Path) -> dict[str, str]:
    """Copy the ruleset under HOME/etc (etc/rules, etc/decoders, etc/lists); {path: MD5}."""
    files = copy_ruleset(home)
    assert files, f"no files in {RULESET}"
    return files


def write_random(path: Path, size: int) -> str:
    """Write C{size} random bytes to C{path} in blocks; their MD5."""
    digest = hashlib.md5()
    with open(path, "wb") as f:
        for _ in range(size // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def snapshot(root: Path, ignore: tuple[str, ...] = DAEMON_FILES) -> dict[str, str]:
    """
    Every file, folder and symbolic link under C{root} (not following links),
    relative path to its MD5 (files), ``dir`` (folders, keyed with a final
    ``/``) or ``-> target`` (links); paths starting with one of C{ignore}
    are left out.
    """
    found: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder, name)
            relpath = path.relative_to(root).as_posix()
            if relpath.startswith(ignore) or (relpath + "/").startswith(ignore):
                continue
            if path.is_symlink():
                found[relpath] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[relpath + "/"] = "dir"
            else:
                found[relpath] = md5_file(path)
    return found


def synchronised(relpath: str) -> bool:
    """Whether the table says C{relpath} (in a synchronised folder, or etc/client.keys) is synchronised."""
    name = relpath.rsplit("/", 1)[-1]
    if name in ("ossec.conf", "ar.conf") or name.endswith(("~", ".tmp", ".lock", ".swp")):
        return False
    if name.startswith(".wazuhcluster-"):
        return False
    return name == "merged.mg" if relpath.startswith("var/multigroups/") else True


def table_state(home: Path) -> dict[str, tuple[str, int, int, int]]:
    """
    Every synchronised file in the synchronised folders, and etc/client.keys:
    (MD5, mode, mtime in ns, inode).
    """
    state: dict[str, tuple[str, int, int, int]] = {}
    for relpath, path in synchronised_paths(home):
        if not synchronised(relpath):
            continue
        try:
            st = path.lstat()
            state[relpath] = (
                md5_file(path), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ino
            )
        except FileNotFoundError:
            continue
    return state


def start(cluster: Cluster, master: Node, *names: str, **options: float | int) -> list[Node]:
    """Start C{master} (built, not started) and workers C{names}; wait until they joined."""
    master.start().wait_ready()
    workers = [cluster.worker(name, options={**OPTIONS, **options}).start() for name in names]
    for worker in workers:
        worker.wait_joined()
    return workers


def ancestors(relpaths: object) -> set[str]:
    """Every folder (with a final ``/``) above the given relative paths."""
    folders = set()
    for relpath in relpaths:  # type: ignore[attr-defined]
        parts = relpath.rstrip("/").split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    return folders


# cluster_control -i more ----------------------------------------------------


def integrity_of(node: Node, worker: str) -> dict[str, str]:
    """The lines of C{worker} in ``cluster_control -i more`` asked of C{node}, as {field: value}."""
    result = node.control("-i", "more")
    assert result.returncode == 0, result.stdout + result.stderr
    fields: dict[str, str] = {}
    inside = False
    for line in result.stdout.splitlines():
        if re.match(r"^    \S+ \(.*\)$", line):
            inside = line.split()[0] == worker
            continue
        if inside and ": " in line:
            key, _, value = line.strip().partition(": ")
            fields[key] = value
    assert fields, f"{worker} is not in the output of cluster_control -i more:\n{result.stdout}"
    return fields


def sync_dates(fields: dict[str, str]) -> tuple[float, float]:
    start, _, end = fields["Last synchronization"].partition(" - ")
    return wazuh_time(start), wazuh_time(end)


# 1. ------------------------------------------------------------------------

#: Files on the master that must never reach a worker: outside the table,
#: excluded names and endings, the daemon's own temporary names.
NEVER_SYNCHRONISED = (
    "etc/ar.conf",
    "etc/client.keys.bak",
    "etc/internal_options.conf",
    "etc/shared/ar.conf",
    "etc/shared/default/ossec.conf",
    "etc/shared/default/agent.conf~",
    "etc/rules/.local_rules.xml.swp",
    "etc/decoders/local_decoder.xml.tmp",
    "etc/lists/audit-keys.lock",
    "etc/rules/.wazuhcluster-0123456789abcdef.tmp",
    "var/multigroups/abc/notes.txt",
    "var/db/global.db",
    "queue/sockets/queue",
)


@needs_ruleset
def test_fresh_workers_receive_the_ruleset_and_nothing_else(cluster: Cluster) -> None:
    """
    Two fresh workers receive the whole Wazuh ruleset under etc/ plus
    client.keys, a group's agent.conf, a merged.mg and an agent-groups file:
    same MD5s, mode 0660 (0640 for client.keys), the master's mtimes.  No
    other file of either home changes: each worker's own ossec.conf stays, the
    master's excluded and out-of-table files never arrive, and a worker's own
    copy of an excluded file (etc/shared/ar.conf) is left alone.
    """
    master = cluster.master(options=OPTIONS)
    expected = place_ruleset(master.home)
    ruleset_count = len(expected)
    past = 1_600_000_000_123_456_789  # a fraction of a second, to check the mtimes closely
    expected["etc/client.keys"] = put(
        master.home, "etc/client.keys", client_keys([("001", "agent1", "any"), ("002", "agent2", "any")]), 0o600, past
    )
    expected["etc/shared/default/agent.conf"] = put(
        master.home, "etc/shared/default/agent.conf", "<agent_config>\n</agent_config>\n", 0o644, past
    )
    expected["var/multigroups/abc/merged.mg"] = put(
        master.home, "var/multigroups/abc/merged.mg", "#default\n!0 merged\n", 0o640, past
    )
    expected["queue/agent-groups/001"] = put(master.home, "queue/agent-groups/001", "default\n", 0o600)
    for relpath in NEVER_SYNCHRONISED:
        put(master.home, relpath, f"{relpath} of the master: never synchronised\n")
    master_conf = master.conf.read_bytes()

    workers = [cluster.worker(name, options=OPTIONS) for name in ("worker1", "worker2")]
    before: dict[str, dict[str, str]] = {}
    for worker in workers:
        # A worker's own files, outside the table or excluded from it.
        put(worker.home, "etc/shared/ar.conf", f"{worker.node_name}'s own ar.conf\n")
        put(worker.home, "etc/internal_options.conf", f"{worker.node_name}'s internal options\n")
        put(worker.home, "var/db/global.db", f"{worker.node_name}'s database\n")
        assert worker.conf.read_bytes() != master_conf
        before[worker.node_name] = snapshot(worker.home)

    started = time.monotonic()
    master.start().wait_ready()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_joined()
    wait_synced(workers, expected, alive=[master, *workers], timeout=30)
    took = time.monotonic() - started
    print(f"\nfirst sync of {len(expected)} files to two fresh workers: {took:.2f} s from the master's start")

    master_state = table_state(master.home)
    for worker in workers:
        # One transfer of everything, then nothing more to do.
        worker.wait_log(f"Integrity check: {len(expected)} missing, 0 different, 0 extra, 0 extra valid.")
        worker.wait_log(f"Received from master master: {len(expected)} files written, 0 deleted.")
        state = table_state(worker.home)
        assert set(state) == set(expected), set(state) ^ set(expected)
        for relpath, (md5, mode, mtime_ns, _) in state.items():
            assert md5 == expected[relpath], relpath
            wanted_mode = 0o640 if relpath == "etc/client.keys" else 0o660
            assert mode == wanted_mode, f"{worker.node_name}:{relpath} has mode {oct(mode)}, not {oct(wanted_mode)}"
            # The bundle carries mtimes as float seconds: within a microsecond of the master's.
            master_mtime = master_state[relpath][2]
            assert abs(mtime_ns - master_mtime) <= 1000, (
                f"{worker.node_name}:{relpath} has mtime {mtime_ns} ns, the master's is {master_mtime} ns"
            )
        assert sum(1 for p in state if p.startswith(("etc/rules/", "etc/decoders/", "etc/lists/"))) == ruleset_count

    # Nothing moves any more, and nothing else in either home changed or appeared.
    states = {w.node_name: table_state(w.home) for w in workers}
    never(
        lambda: any(table_state(w.home) != states[w.node_name] for w in workers),
        "a worker's synchronised files changing again",
        duration=1.5,
    )
    for worker in workers:
        after = snapshot(worker.home)
        files_before = {p: m for p, m in before[worker.node_name].items() if not p.endswith("/")}
        files_after = {p: m for p, m in after.items() if not p.endswith("/")}
        assert files_after == {**files_before, **expected}, {
            p for p in set(files_after) ^ set(files_before) ^ set(expected)
        }
        new_folders = {p for p in after if p.endswith("/")} - set(before[worker.node_name])
        assert new_folders <= ancestors(expected), new_folders - ancestors(expected)
        assert after["etc/ossec.conf"] == before[worker.node_name]["etc/ossec.conf"]
        assert (worker.home / "etc/shared/ar.conf").read_text() == f"{worker.node_name}'s own ar.conf\n"
        assert not (worker.home / "etc/ar.conf").exists()
        assert not temporaries(worker.home)
    assert master.conf.read_bytes() == master_conf


# 2. ------------------------------------------------------------------------


@needs_ruleset
def test_an_edited_rule_reaches_every_worker_and_nothing_else_is_rewritten(cluster: Cluster) -> None:
    """
    A rule edited on the master reaches both workers within seconds (inotify
    wakes them; the measured times are printed), renamed into place (a new
    inode) with the master's mtime; every other synchronised file keeps its
    inode and mtime on the workers.
    """
    master = cluster.master(options=OPTIONS)
    expected = place_ruleset(master.home)
    expected["etc/client.keys"] = put(master.home, "etc/client.keys", client_keys([("001", "agent1", "any")]))
    workers = start(cluster, master, "worker1", "worker2")
    wait_synced(workers, expected, alive=[master, *workers], timeout=30)

    rule = "etc/rules/0010-rules_config.xml"
    assert rule in expected
    original = (master.home / rule).read_bytes()
    before = {w.node_name: table_state(w.home) for w in workers}
    times: list[float] = []
    for edit in range(3):
        content = original + f"<!-- edit {edit} on the master -->\n".encode()
        wanted = hashlib.md5(content).hexdigest()
        # (The worker's copy is live until replaced: its temporary cannot reuse its inode.)
        inodes = {w.node_name: (w.home / rule).stat().st_ino for w in workers}
        (master.home / rule).write_bytes(content)  # in place, as an editor without backups does
        written = time.monotonic()
        arrived: dict[str, float] = {}

        def everywhere() -> bool:
            for worker in workers:
                if worker.node_name not in arrived and md5_or_none(worker.home / rule) == wanted:
                    arrived[worker.node_name] = time.monotonic() - written
            return len(arrived) == len(workers)

        wait_for(everywhere, f"edit {edit} of {rule} to reach both workers", timeout=10, interval=0.01,
                 alive=[master, *workers])
        times.extend(arrived.values())
        for worker in workers:
            assert (worker.home / rule).stat().st_ino != inodes[worker.node_name], (
                f"{worker.node_name} rewrote {rule} in place instead of renaming a new file into place"
            )
        print(f"\nedit {edit}: " + ", ".join(f"{name} {t * 1000:.0f} ms" for name, t in sorted(arrived.items())))
    print(f"propagation of an edited rule: median {statistics.median(times) * 1000:.0f} ms,"
          f" worst {max(times) * 1000:.0f} ms over {len(times)} arrivals")
    assert max(times) < 10

    master_mtime = (master.home / rule).stat().st_mtime_ns

    def unchanged_but_the_rule() -> bool:
        for worker in workers:
            state = table_state(worker.home)
            old = before[worker.node_name]
            assert set(state) == set(old), set(state) ^ set(old)
            for relpath, entry in state.items():
                if relpath == rule:
                    md5, mode, mtime_ns, _ = entry
                    assert md5 == hashlib.md5(content).hexdigest() and mode == 0o660
                    assert abs(mtime_ns - master_mtime) <= 1000, (mtime_ns, master_mtime)
                else:
                    assert entry == old[relpath], f"{worker.node_name}:{relpath} was touched: {old[relpath]} -> {entry}"
        return False

    never(unchanged_but_the_rule, "a change", duration=1.5)
    assert not any(temporaries(w.home) for w in workers)


# 3. ------------------------------------------------------------------------


def test_deletions_extras_pruning_and_extra_valid_group_files(cluster: Cluster) -> None:
    """
    Files deleted on the master disappear from both workers, and the
    folders those deletions emptied under etc/shared and var/multigroups
    with them (not under etc/rules, where the table does not prune).  A rule
    and a group file written by hand on a worker are deleted there and never
    reach the master.  A queue/agent-groups file written only on a worker,
    for an agent in the master's client.keys, is copied to the master (and
    from there to the other worker); for an agent the master does not
    register, it is removed from the worker and never reaches the master.
    """
    master = cluster.master(options=OPTIONS)
    expected: dict[str, str] = {}
    for relpath, content in (
        ("etc/client.keys", client_keys([("001", "agent1", "any"), ("002", "agent2", "any")])),
        ("etc/rules/local_rules.xml", '<group name="local,">\n</group>\n'),
        ("etc/rules/old_rules.xml", '<group name="old,">\n</group>\n'),
        ("etc/rules/sub/nested_rules.xml", '<group name="nested,">\n</group>\n'),
        ("etc/decoders/local_decoder.xml", "<decoder name=\"local\">\n</decoder>\n"),
        ("etc/shared/default/agent.conf", "<agent_config>\n</agent_config>\n"),
        ("etc/shared/group2/sub/agent.conf", "<agent_config name=\"group2\">\n</agent_config>\n"),
        ("var/multigroups/abc/merged.mg", "#default\n"),
        ("var/multigroups/xyz/merged.mg", "#group2\n"),
        ("queue/agent-groups/001", "default\n"),
    ):
        expected[relpath] = put(master.home, relpath, content)
    workers = start(cluster, master, "worker1", "worker2")
    worker1, worker2 = workers
    wait_synced(workers, expected, alive=[master, *workers])

    # On the master: a rule deleted, a nested rule deleted (its folder kept), a group removed.
    deleted = [
        "etc/rules/old_rules.xml",
        "etc/rules/sub/nested_rules.xml",
        "etc/shared/group2/sub/agent.conf",
        "var/multigroups/xyz/merged.mg",
    ]
    (master.home / "etc/rules/old_rules.xml").unlink()
    (master.home / "etc/rules/sub/nested_rules.xml").unlink()
    shutil.rmtree(master.home / "etc/shared/group2")
    shutil.rmtree(master.home / "var/multigroups/xyz")
    # On worker1: files by hand, and two agents' group assignments.
    hand = ["etc/rules/hand_rules.xml", "etc/shared/default/hand.conf"]
    for relpath in hand:
        put(worker1.home, relpath, "written by hand on worker1\n")
    known = put(worker1.home, "queue/agent-groups/002", "default,group2\n")
    put(worker1.home, "queue/agent-groups/777", "default\n")
    for relpath in deleted:
        del expected[relpath]
    expected["queue/agent-groups/002"] = known

    def cleaned(worker: Node) -> bool:
        return (
            not any((worker.home / p).exists() for p in deleted + hand)
            and not (worker.home / "etc/shared/group2").exists()
            and not (worker.home / "var/multigroups/xyz").exists()
            and has_files(worker.home, expected)
        )

    for worker in workers:
        wait_for(lambda: cleaned(worker), f"{worker.node_name} to follow the deletions", timeout=15,
                 alive=[master, *workers])
    wait_for(lambda: md5_or_none(master.home / "queue/agent-groups/002") == known,
             "the master to take agent 002's group file from worker1", timeout=15, alive=[master, *workers])
    # The master does not even ask for the group file of an agent it does not
    # know (asking would only get it refused again, every cycle).

    # A settled state: the unknown agent's file is gone from worker1 and
    # reached no other node; the hand-written files never reach the master.
    wait_for(lambda: not (worker1.home / "queue/agent-groups/777").exists(),
             "worker1 to remove the group file of an unregistered agent", timeout=15, alive=[master, *workers])

    def settled_wrongly() -> bool:
        for node in (master, worker1, worker2):
            assert not (node.home / "queue/agent-groups/777").exists(), node
        for relpath in hand:
            assert not (master.home / relpath).exists(), relpath
        return False

    never(settled_wrongly, "a change", duration=2.0)
    assert table_state(master.home).keys() == expected.keys()
    assert has_files(master.home, expected)
    assert stat.S_IMODE((master.home / "queue/agent-groups/002").stat().st_mode) == 0o660
    for worker in workers:
        state = table_state(worker.home)
        assert set(state) == set(expected), set(state) ^ set(expected)
        # Pruned only where the table says: etc/rules/sub stays, empty.
        assert (worker.home / "etc/rules/sub").is_dir()
        assert not any((worker.home / "etc/rules/sub").iterdir())
        assert (worker.home / "etc/shared/default").is_dir()
        assert (worker.home / "var/multigroups/abc").is_dir()
        assert not temporaries(worker.home)
    assert "agent '777'" not in master.log_text()


# 4. ------------------------------------------------------------------------


def big_transfer(cluster: Cluster) -> tuple[Node, Node, bytes, str]:
    """
    A master and a worker that holds the master's 512 KiB etc/lists/big;
    then the master's big is replaced with BIG_SIZE random bytes.  Returns
    the master, the worker, the old content and the new MD5.
    """
    master = cluster.master(options=OPTIONS)
    old = os.urandom(512 * 1024)
    put(master.home, "etc/lists/big", old)
    put(master.home, "etc/rules/local_rules.xml", '<group name="local,">\n</group>\n')
    (worker,) = start(cluster, master, "worker1")
    wait_for(lambda: md5_or_none(worker.home / "etc/lists/big") == hashlib.md5(old).hexdigest(),
             "the old etc/lists/big on the worker", timeout=15, alive=[master, worker])
    new_md5 = write_random(master.home / "big.new", BIG_SIZE)
    os.replace(master.home / "big.new", master.home / "etc/lists/big")
    return master, worker, old, new_md5


def kill_mid_transfer(victim: Node, worker: Node, alive: list[Node]) -> tuple[list[Path], int]:
    """
    SIGKILL C{victim} once the worker has staged a quarter of the new
    etc/lists/big; the temporary files then, and how many bytes they held.
    """

    def a_quarter_staged() -> list[Path] | None:
        staged = temporaries(worker.home / "etc/lists")
        return staged if total_size(staged) >= BIG_SIZE // 4 else None

    staged = wait_for(a_quarter_staged, "a quarter of etc/lists/big to be staged on the worker",
                      timeout=30, interval=0.005, alive=alive)
    size = total_size(staged)
    victim.kill()
    if victim is worker:
        size = max(size, total_size(staged))
    print(f"\n{victim.node_name} killed with {size} of {BIG_SIZE} bytes staged")
    return staged, size


def test_master_killed_mid_transfer_leaves_the_worker_consistent(cluster: Cluster) -> None:
    """
    The master is killed while it sends a 64 MiB incompressible CDB list:
    the worker keeps the old list byte for byte (same inode) and removes the
    temporary file at once; once the master is back, the new list arrives.
    """
    master, worker, old, new_md5 = big_transfer(cluster)
    big = worker.home / "etc/lists/big"
    inode = big.stat().st_ino
    mark = worker.mark()
    staged, size = kill_mid_transfer(master, worker, alive=[master, worker])
    assert size < BIG_SIZE, "the transfer ended before the master was killed"

    worker.wait_log("Lost connection to master", since=mark)
    # The master spools what it sends in anonymous files: the killed one left
    # nothing behind but its control socket (and that socket's lock).
    left = [p.name for p in (master.home / "queue/cluster").iterdir()]
    assert all(name.startswith("c-internal.sock") for name in left), left
    wait_for(lambda: not temporaries(worker.home), "the worker to remove its temporary files", timeout=10,
             alive=[worker])
    assert big.read_bytes() == old
    assert big.stat().st_ino == inode
    assert "Received from master" not in worker.log_since(mark)

    master.start().wait_ready()
    wait_for(lambda: md5_or_none(big) == new_md5 and not temporaries(worker.home),
             "the new etc/lists/big on the worker", timeout=40, interval=0.3, alive=[master, worker])
    assert stat.S_IMODE(big.stat().st_mode) == 0o660


def test_worker_killed_mid_transfer_cleans_up_at_its_restart(cluster: Cluster) -> None:
    """
    The worker is killed while it receives a 64 MiB CDB list: its old list
    is intact; started again, it removes the temporary file the killed
    process left (and says so) before anything else, and the new list then
    arrives whole.
    """
    master, worker, old, new_md5 = big_transfer(cluster)
    big = worker.home / "etc/lists/big"
    staged, size = kill_mid_transfer(worker, worker, alive=[master, worker])
    left = temporaries(worker.home)
    assert left, "the killed worker left no temporary file: it was not killed mid-transfer"
    assert set(left) <= set(staged) and size < BIG_SIZE
    assert big.read_bytes() == old

    mark = worker.mark()
    worker.start()
    removed = worker.wait_log(re.compile(r"Removed (\d+) temporary files left by an interrupted transfer"),
                              since=mark)
    assert int(re.search(r"\d+", removed).group(0)) == len(left), removed
    assert not any(path.exists() for path in left)
    wait_for(lambda: md5_or_none(big) == new_md5 and not temporaries(worker.home),
             "the new etc/lists/big on the worker", timeout=40, interval=0.3, alive=[master, worker])
    assert stat.S_IMODE(big.stat().st_mode) == 0o660


# 5. ------------------------------------------------------------------------


@needs_ruleset
def test_control_shows_each_workers_last_sync(cluster: Cluster) -> None:
    """
    ``cluster_control -i more`` on the master (and on the worker, which asks
    the master) shows the last sync of a worker: its dates and its counts,
    "N missing" for the ruleset sent to a fresh worker, then "1 shared"
    for a rule edited on the master (synced at once), then "1 extra, 1 extra
    valid" for a rule and an unknown agent's group file written on the
    worker (found by its next timed check).

    The worker syncs every 4 s here (not 1 s), so that each sync's counts
    stay on show long enough to be read; it logs at debug level, to tell
    when a cycle has just passed.
    """
    master = cluster.master(options=OPTIONS)
    ruleset = place_ruleset(master.home)
    master.start().wait_ready()
    started = time.time()
    worker = cluster.worker("worker1", options={**OPTIONS, "cluster.sync_integrity": 4, "wazuh_clusterd.debug": 2})
    worker.start().wait_joined()

    def shows(files: str) -> dict[str, str] | None:
        fields = integrity_of(master, "worker1")
        return fields if fields["Files"] == files and fields["Synchronizing now"] == "no" else None

    first = wait_for(lambda: shows(f"0 shared, {len(ruleset)} missing, 0 extra, 0 extra valid"),
                     "the first sync's counts", timeout=20, interval=0.3, alive=[master, worker])
    start_time, end_time = sync_dates(first)
    assert started - 1 <= start_time <= end_time <= time.time() + 1, first
    print(f"\nfirst sync shown by cluster_control: {first['Files']}; {first['Last synchronization']}")
    wait_synced([worker], ruleset, alive=[master, worker])

    # Right after a cycle (the worker logs its in-sync rounds at debug level),
    # a rule edited on the master wakes the worker at once: that check starts
    # from the worker's last scan, and moves the one file.
    mark = worker.mark()
    worker.wait_log(f"Files in sync with the master ({len(ruleset)} files).", since=mark, timeout=10)
    rule = "etc/rules/0010-rules_config.xml"
    (master.home / rule).write_bytes((master.home / rule).read_bytes() + b"<!-- edited -->\n")
    second = wait_for(lambda: shows("1 shared, 0 missing, 0 extra, 0 extra valid"),
                      "the pushed sync's counts", timeout=10, interval=0.3, alive=[master, worker])
    start2, end2 = sync_dates(second)
    assert end_time <= start2 <= end2 <= time.time() + 1, second
    assert md5_file(worker.home / rule) == md5_file(master.home / rule)
    # Files written on the worker are found by its next timed check, which
    # walks its whole table.
    put(worker.home, "etc/rules/worker_only_rules.xml", "written on the worker\n")
    put(worker.home, "queue/agent-groups/005", "default\n")
    third = wait_for(lambda: shows("0 shared, 0 missing, 1 extra, 1 extra valid"),
                     "the timed sync's counts", timeout=10, interval=0.3, alive=[master, worker])
    start3, end3 = sync_dates(third)
    assert end2 <= start3 <= end3 <= time.time() + 1, third
    assert integrity_of(worker, "worker1")["Files"] in (
        "0 shared, 0 missing, 1 extra, 1 extra valid",
        "0 shared, 0 missing, 0 extra, 1 extra valid",  # if the next cycle came meanwhile
    )
    assert not (worker.home / "etc/rules/worker_only_rules.xml").exists()
    assert md5_file(worker.home / rule) == md5_file(master.home / rule)


# 6. ------------------------------------------------------------------------


def test_a_hostile_master_cannot_write_outside_the_table(cluster: Cluster, tmp_path: Path) -> None:
    """
    A master whose bundles also carry ``../../escaped``, an absolute path,
    ``etc/ossec.conf``, ``logs/cluster.log`` and paths through a symbolic
    link the worker has in etc/rules (and deletions of files outside the
    table): the worker refuses each one and logs it, writes and deletes
    nothing outside its table, and takes the legitimate files.
    """
    master_home = tmp_path / "m"
    payload = f"HOSTILE-PAYLOAD-{secrets.token_hex(8)}\n"
    put(master_home, "payload", payload)
    outside = tmp_path / "outside"
    put(outside, "victim.xml", "outside the worker's home\n")
    put(tmp_path / "h", "victim", "beside the worker's home\n")
    absolute = tmp_path / "absolute-escaped"
    hostile_files = [
        "../../escaped",
        str(absolute),
        "etc/ossec.conf",
        "logs/cluster.log",
        "etc/rules/linked/evil.xml",
        "etc/rules/linked",
        "etc/rules/../../../escaped",
    ]
    hostile_deletions = ["../victim", "etc/rules/linked/victim.xml", "etc/ossec.conf"]
    master = hostile_master(
        cluster,
        [(path, str(master_home / "payload")) for path in hostile_files],
        hostile_deletions,
        options=OPTIONS,
    )
    legit = {
        "etc/rules/local_rules.xml": put(master.home, "etc/rules/local_rules.xml", '<group name="local,">\n</group>\n'),
        "etc/client.keys": put(master.home, "etc/client.keys", client_keys([("001", "agent1", "any")])),
    }
    worker = cluster.worker("worker1", home="h/w1", options=OPTIONS)
    (worker.home / "etc/rules").mkdir(parents=True)
    (worker.home / "etc/rules/linked").symlink_to(outside)
    conf = worker.conf.read_bytes()
    ignored = ("m/",) + tuple(f"h/w1/{prefix}" for prefix in DAEMON_FILES)
    before = snapshot(tmp_path, ignored)

    master.start().wait_ready()
    worker.start().wait_joined()
    master.wait_log("HOSTILE bundle: ")
    # The master logs this once the worker answered the bundle: it was committed.
    master.wait_log("Integrity sync with worker worker1: ")

    # Nothing outside the table was written or deleted; ossec.conf and the link are as they were.
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "h/escaped").exists()
    assert not absolute.exists()
    assert not (outside / "evil.xml").exists()
    assert (outside / "victim.xml").exists() and (tmp_path / "h/victim").exists()
    assert worker.conf.read_bytes() == conf
    assert os.readlink(worker.home / "etc/rules/linked") == str(outside)
    after = snapshot(tmp_path, ignored)
    files_before = {p: m for p, m in before.items() if not p.endswith("/")}
    files_after = {p: m for p, m in after.items() if not p.endswith("/")}
    assert files_after == {**files_before, **{f"h/w1/{p}": md5 for p, md5 in legit.items()}}, (
        set(files_after.items()) ^ set(files_before.items())
    )
    # The daemon's own folders (queue/cluster, var/run) are the only new ones.
    assert {p for p in after if p.endswith("/")} - set(before) <= {"h/w1/queue/", "h/w1/var/"}
    assert not temporaries(tmp_path)

    # The legitimate files landed, and every hostile record was refused by name.
    assert has_files(worker.home, legit)
    assert payload.strip() not in worker.log_text()
    worker.wait_log(f"Received from master master: {len(legit)} files written, 0 deleted.")
    refusals = worker.log_lines("Refused a file from master master")
    for path in hostile_files + hostile_deletions:
        assert any(repr(path) in line for line in refusals), f"no refusal of {path!r} logged:\n" + "\n".join(refusals)
    assert len(refusals) == len(hostile_files) + len(hostile_deletions), "\n".join(refusals)
    assert worker.running() and master.running()
