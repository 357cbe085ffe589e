"""
Attacks on the REST API (issue 12, items 1, 3, 4 and 5), against a real
twistd master and worker on the loopback:

 - a CDB list line that made the old list check backtrack for minutes,
   written on the master and (through it) on the worker: refused with 705,
   the worker stays connected;
 - a POST declaring 1 GiB without credentials: 401 in JSON, nothing of the
   body spooled to disk or held in memory;
 - slow clients from ten addresses (request line, then a header line a
   second): over the caps they are closed at once, the rest when the header
   deadline passes; the master's descriptors stay bounded, and a rule edited
   during the attack still reaches the worker;
 - a wrong-password flood from eight addresses: each is blocked after its
   attempts (429, one log line), while a correct client is served throughout.

Every loop is bounded in count, every wait in time.  The clients are the
standard library's (L{tests.support.apiclients}), not the daemon's code.
"""

from __future__ import annotations

import threading
import time

import yaml

from lab.nodes import Cluster, Node, free_port, port_is_bindable, wait_for
from lab.trees import AGENT_OPTIONS, md5_file, put
from tests.support import apiclients
from wazuhcluster.api.users import ApiUsers, ScryptCost

USER, PASSWORD = "wazuh-api", "correct horse battery"
CHEAP = ScryptCost(n=2**10, r=8, p=1)

#: Small limits, so that the tests trip them with few connections.
LIMITS = {
    "intervals": {"headers_timeout": 3, "request_timeout": 20},
    "access": {"max_connections": 40, "max_connections_per_address": 8, "max_login_attempts": 10},
}



def start(cluster: Cluster) -> tuple[Node, Node, int]:
    """A master with its API on (small limits) and one worker, joined."""
    master = cluster.master(options=AGENT_OPTIONS)
    port = free_port()
    folder = master.home / "api" / "configuration"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "api.yaml").write_text(yaml.safe_dump({"port": port, **LIMITS}))
    ApiUsers(str(folder / "users.json"), cost=CHEAP).add(USER, PASSWORD)
    master.start().wait_ready()
    worker = cluster.worker("worker1", options=AGENT_OPTIONS).start()
    worker.wait_joined()
    wait_for(lambda: not port_is_bindable(port), "the API to listen", alive=[master, worker])
    return master, worker, port


def arrives(master: Node, worker: Node, relpath: str, data: bytes) -> None:
    """Write C{relpath} on the master; wait until the worker has the same bytes."""
    digest = put(master.home, relpath, data)
    target = worker.home / relpath
    wait_for(lambda: target.exists() and md5_file(target) == digest, f"{relpath} to reach the worker",
             alive=[master, worker], timeout=30)


def still_joined(master: Node, since: int) -> None:
    assert "disconnected" not in master.log_since(since), master.log_since(since)[-2000:]


def test_pathological_list_lines_are_answered(cluster: Cluster) -> None:
    master, worker, port = start(cluster)
    mark = master.mark()
    line = b"a" * 120_000 + b"\n"  # 120 KB without a colon: minutes of backtracking before
    for node in ("master", "worker1"):
        status, answer = apiclients.ask(port, "POST", f"/cluster/{node}/files?path=etc/lists/evil", line,
                                        auth=(USER, PASSWORD), timeout=60)
        assert status == 400 and answer["error"] == 705, answer
        assert "line 1" in answer["message"], answer
    assert not (master.home / "etc" / "lists" / "evil").exists()
    assert not (worker.home / "etc" / "lists" / "evil").exists()
    arrives(master, worker, "etc/lists/after-redos", b"key:value\n")
    still_joined(master, mark)


def test_unauthenticated_huge_upload_is_refused_before_its_body(cluster: Cluster) -> None:
    master, worker, port = start(cluster)
    assert master.process is not None
    pid = master.process.pid
    before = apiclients.rss_kb(pid)
    spooled = [0]
    done = threading.Event()

    def watch() -> None:
        for _ in range(600):  # at most 30 s
            spooled[0] = max(spooled[0], apiclients.spooled_bytes(pid))
            if done.wait(0.05):
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = apiclients.huge_upload(port, 2**30, auth=None, limit_seconds=20)
    finally:
        done.set()
        watcher.join()
    assert result["status"] == 401, result
    assert result["answer"] == {"error": 6100, "message": "Invalid credentials"}, result
    assert spooled[0] == 0
    assert apiclients.rss_kb(pid) - before < 32 * 1024
    # With credentials but over max_upload_size (17 MiB): 413 at once, nothing kept either.
    result = apiclients.huge_upload(port, 2**30, auth=(USER, PASSWORD), limit_seconds=20)
    assert result["status"] == 413 and result["answer"]["error"] == 614, result
    assert apiclients.spooled_bytes(pid) == 0
    assert not (master.home / "etc" / "rules" / "huge.xml").exists()


def test_slow_clients_cannot_take_every_descriptor(cluster: Cluster) -> None:
    master, worker, port = start(cluster)
    assert master.process is not None
    pid = master.process.pid
    mark = master.mark()
    baseline = apiclients.open_fds(pid)
    peak = [baseline]
    edited = [False]

    def sample() -> None:
        peak[0] = max(peak[0], apiclients.open_fds(pid))
        if not edited[0]:
            edited[0] = True
            put(master.home, "etc/rules/during_slowloris.xml", b"<group name='slow,'/>\n")

    sources = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 addresses x 12 = 120 > 40 in all, > 8 each
    result = apiclients.slow_clients(port, sources, per_source=12, seconds=8, sample=sample)
    # Over the caps: closed at once; the others when the header deadline (3 s) passed.
    assert result["open_at_end"] == 0, result
    caps = LIMITS["access"]
    assert peak[0] <= baseline + caps["max_connections"] + 4, (baseline, peak)
    late = master.log_lines("did not arrive within 3 s", since=mark)
    assert 1 <= len(late) <= len(sources), late
    arrives(master, worker, "etc/rules/after_slowloris.xml", b"<group name='after,'/>\n")
    target = worker.home / "etc" / "rules" / "during_slowloris.xml"
    wait_for(target.exists, "the rule edited during the attack to arrive", alive=[master, worker], timeout=30)
    still_joined(master, mark)
    assert apiclients.ask(port, "GET", "/cluster/node", auth=(USER, PASSWORD))[0] == 200


def test_wrong_password_flood_is_throttled(cluster: Cluster) -> None:
    master, worker, port = start(cluster)
    mark = master.mark()
    attempts = LIMITS["access"]["max_login_attempts"]
    statuses: dict[str, list[int]] = {}

    def flood(source: str) -> None:
        session = apiclients.Session(port, (USER, "wrong password"), source=source)
        try:
            statuses[source] = [session.get("/cluster/node") for _ in range(attempts + 10)]
        finally:
            session.close()

    sources = [f"127.0.0.{i}" for i in range(2, 10)]
    threads = [threading.Thread(target=flood, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    good = apiclients.Session(port, (USER, PASSWORD))
    served = []
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and len(served) < 200 and time.monotonic() < deadline:
        served.append(good.get("/cluster/node"))
    good.close()
    for t in threads:
        t.join(60)
    assert served and set(served) == {200}, served
    for source in sources:
        got = statuses[source]
        assert got[:attempts] == [401] * attempts and set(got[attempts:]) == {429}, (source, got)
        assert len(master.log_lines(f"API logins from {source} refused for", since=mark)) == 1
    still_joined(master, mark)
