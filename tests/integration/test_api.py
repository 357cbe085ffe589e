"""
The REST API end to end: real nodes (a master, a worker whose API is on,
over HTTPS, and a worker whose API is off) started as twistd processes, and
questioned over HTTP with treq, as a client of the Wazuh API would.

One cluster serves the whole module (starting it is most of the cost).  The
tests only add to it, so they can run alone or in any order, with two
exceptions kept in file order: the healthcheck test runs first, while the
worker that syncs rarely has not synced yet ("n/a" dates), and the two
tests that stop the master run last.

Every wait for the cluster to do something is a bounded poll, through the
API where the API can tell, with the reactor running between attempts.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence, TypeVar
from urllib.parse import quote

import pytest
import pytest_twisted
import treq
import yaml
from attrs import frozen
from OpenSSL import SSL
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, CertificateOptions
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from lab.trees import AGENT_OPTIONS as OPTIONS
from wazuhcluster import __version__
from wazuhcluster.api.localnode import MAX_FILE_SIZE
from wazuhcluster.api.users import ApiUsers, ScryptCost

from .nodes import Cluster, Node, free_port, port_is_bindable, run_twistd, wait_for

T = TypeVar("T")


#: worker2 syncs when it joins, then only when the master says its files
#: changed (never on its own during the tests), so that a file written there
#: through the API stays until the master changes something.
RARE_SYNC = {**OPTIONS, "cluster.sync_integrity": 3600}

USER, PASSWORD = "wazuh-api", "correct horse battery"
#: A second user whose password has the default (slow) scrypt cost.
SLOW_USER, SLOW_PASSWORD = "alice", "alice's password"
#: The main user's hash is cheap, so that ~200 requests do not cost ~10 s of scrypt.
CHEAP = ScryptCost(n=2**10, r=8, p=1)

#: A rules file of Wazuh's ruleset, 120 KB: over INLINE_LIMIT (32 KiB) and over 64 KiB.
BIG_RULES = Path("/work/shared/corpus/wazuh-ruleset/rules/0585-win-application_rules.xml")

#: Rules the tests write (well formed; the second has two top-level nodes).
RULES_V1 = b'<group name="api,">\n  <rule id="100100" level="3">\n    <match>one</match>\n  </rule>\n</group>\n'
RULES_V2 = RULES_V1.replace(b"one", b"two") + b"<!-- second version -->\n"

#: How long a test waits for the cluster to do something.
PATIENCE = 20.0


def bigRules() -> bytes:
    """A valid rules file larger than 64 KiB (Wazuh's own, when the corpus is there)."""
    if BIG_RULES.exists():
        return BIG_RULES.read_bytes()
    rules = "".join(
        f'  <rule id="{200000 + i}" level="{i % 16}">\n'
        f"    <if_sid>60000</if_sid>\n    <match>event number {i} \u00e9\u00e8 &amp; more</match>\n"
        f"    <description>Generated rule {i}.</description>\n  </rule>\n"
        for i in range(1200)
    )
    return f'<group name="generated,">\n{rules}</group>\n'.encode()


# The cluster. -----------------------------------------------------------------


@frozen
class Api:
    """The API of one node: its base URL and the client that reaches it."""

    node: Node
    url: str
    client: treq.client.HTTPClient


@frozen
class ApiCluster:
    cluster: Cluster
    master: Node
    worker1: Node
    worker2: Node
    #: The master's API (HTTP) and worker1's (HTTPS).
    masterApi: Api
    workerApi: Api
    #: The port worker2's api.yaml names, though its API is off (a worker's default).
    worker2Port: int
    #: Where each node's restart command writes (node name -> marker file).
    markers: dict[str, Path]


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedCertificate:
    """
    TLS that trusts exactly one certificate, the node's own (self-signed,
    named for the node, not for 127.0.0.1), whatever address the URL names.
    """

    def __init__(self, certificate: Path) -> None:
        expected = Certificate.loadPEM(certificate.read_bytes()).digest("sha256")

        def verify(connection: Any, x509: Any, errno: int, depth: int, ok: int) -> bool:
            # Self-signed: OpenSSL calls this with errno 18 for the one certificate.
            return x509.digest("sha256") == expected

        self.context = CertificateOptions().getContext()
        self.context.set_verify(SSL.VERIFY_PEER, verify)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        return connection


@implementer(IPolicyForHTTPS)
class _PinnedPolicy:
    def __init__(self, certificate: Path) -> None:
        self.creator = _PinnedCertificate(certificate)

    def creatorForNetloc(self, hostname: bytes, port: int) -> _PinnedCertificate:
        return self.creator


def _client(policy: IPolicyForHTTPS | None = None) -> treq.client.HTTPClient:
    from twisted.internet import reactor

    # No persistent connections: nothing is left open when the nodes stop.
    pool = HTTPConnectionPool(reactor, persistent=False)
    if policy is None:
        return treq.client.HTTPClient(Agent(reactor, pool=pool))
    return treq.client.HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


def _apiSettings(node: Node, marker: Path, **settings: Any) -> None:
    """Write the node's api.yaml; its restart command appends a line to C{marker}, 1.5 s later."""
    script = f"import time; time.sleep(1.5); open({str(marker)!r}, 'a').write('restarted\\n')"
    folder = node.home / "api" / "configuration"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "api.yaml").write_text(
        yaml.safe_dump({**settings, "restart_command": [sys.executable, "-c", script]})
    )


def _addUsers(node: Node) -> None:
    users = node.home / "api" / "configuration" / "users.json"
    ApiUsers(str(users), cost=CHEAP).add(USER, PASSWORD)
    ApiUsers(str(users)).add(SLOW_USER, SLOW_PASSWORD)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiCluster]:
    base = tmp_path_factory.mktemp("api")
    cluster = Cluster(base)
    try:
        master = cluster.master(options=OPTIONS)
        worker1 = cluster.worker("worker1", options=OPTIONS)
        worker2 = cluster.worker("worker2", options=RARE_SYNC)
        markers = {n.node_name: base / f"restarted-{n.node_name}" for n in (master, worker1, worker2)}
        masterPort, workerPort, worker2Port = free_port(), free_port(), free_port()
        # The master's API is on by default; worker1's is turned on, over HTTPS
        # with the node's own certificate; worker2 says nothing (off on a worker).
        # 100 registrations at once from one address: over the default cap per address.
        many = {"max_connections_per_address": 128}
        _apiSettings(master, markers["master"], port=masterPort, access=many)
        _apiSettings(worker1, markers["worker1"], enabled="yes", port=workerPort, https={"enabled": "yes"}, access=many)
        _apiSettings(worker2, markers["worker2"], port=worker2Port)
        _addUsers(master)
        _addUsers(worker1)

        master.start().wait_ready()
        worker1.start()
        worker2.start()
        for worker in (worker1, worker2):
            worker.wait_joined()
        for node, port in ((master, masterPort), (worker1, workerPort)):
            wait_for(lambda: not port_is_bindable(port), f"the API of {node.node_name} to listen",
                     alive=[master, worker1, worker2])
        yield ApiCluster(
            cluster, master, worker1, worker2,
            Api(master, f"http://127.0.0.1:{masterPort}", _client()),
            Api(worker1, f"https://127.0.0.1:{workerPort}", _client(_PinnedPolicy(worker1.node_cert))),
            worker2Port, markers,
        )
    finally:
        cluster.cleanup()


@pytest.fixture(autouse=True)
def _reportOnFailure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the nodes' logs when a test that used the shared cluster failed."""
    yield
    failed = any(getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))
    if failed and "api" in request.fixturenames:
        print(request.getfixturevalue("api").cluster.report())


# Talking to the API. ------------------------------------------------------------


@frozen
class Answer:
    status: int
    headers: Any
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def data(self) -> Any:
        body = self.json
        assert self.status == 200 and body["error"] == 0, f"HTTP {self.status}: {self.raw[:2000]!r}"
        assert set(body) == {"error", "data"}, body
        return body["data"]

    @property
    def ok(self) -> bool:
        """A success: HTTP 200 and error 0 (3.x answers most errors with HTTP 200 too)."""
        return self.status == 200 and self.json.get("error") == 0

    def header(self, name: str) -> list[str]:
        return [v.decode() for v in self.headers.getRawHeaders(name.encode(), [])]


async def ask(
    api: Api, method: str, path: str, body: bytes | None = None,
    auth: tuple[str, str] | None = (USER, PASSWORD), contentType: str | None = None,
) -> Answer:
    """
    Send a request; a POST of a file says C{application/octet-stream}
    unless C{contentType} says otherwise (the API takes files only so).
    """
    if contentType is None and method == "POST" and "/files" in path:
        contentType = "application/octet-stream"
    headers = {b"Content-Type": [contentType.encode()]} if contentType else None
    response = await api.client.request(method, api.url + path, data=body, auth=auth, headers=headers)
    return Answer(response.code, response.headers, await response.content())


async def get(api: Api, path: str) -> Any:
    """The data of a successful GET."""
    return (await ask(api, "GET", path)).data


async def failure(api: Api, method: str, path: str, code: int, status: int, body: bytes | None = None) -> str:
    """Check that the API answers error C{code} with HTTP C{status}; the message."""
    answer = await ask(api, method, path, body)
    assert answer.status == status, f"{method} {path}: HTTP {answer.status}, {answer.raw[:500]!r}"
    assert answer.header("content-type") == ["application/json; charset=utf-8"]
    error = answer.json
    assert set(error) == {"error", "message"} and error["error"] == code, (method, path, error)
    assert isinstance(error["message"], str) and error["message"], error
    return error["message"]


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor

    await deferLater(reactor, seconds, lambda: None)


async def eventually(
    check: Callable[[], Awaitable[T]], what: str, nodes: ApiCluster, timeout: float = PATIENCE,
    alive: Sequence[Node] | None = None,
) -> T:
    """
    Ask C{check} every 0.2 s until it gives something true, and return
    that; fail at once if one of the C{alive} nodes (by default all three)
    has exited.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        for node in (nodes.master, nodes.worker1, nodes.worker2) if alive is None else alive:
            node.assert_running()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        await sleep(0.2)


def filePath(path: str, overwrite: bool = False) -> str:
    return f"/files?path={quote(path, safe='')}" + ("&overwrite=true" if overwrite else "")


def readOrNone(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


# The tests. ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_healthcheck_before_and_after_the_first_sync(api: ApiCluster) -> None:
    """
    The healthcheck's shape; worker2 checked its files when it joined (its
    timed cycle is far off): dates, and counts of a worker in sync; the
    other syncs it has not had show "n/a" dates, until worker1's show dates.
    """
    health = await get(api.masterApi, "/cluster/healthcheck")
    assert set(health) == {"n_connected_nodes", "nodes"}
    assert health["n_connected_nodes"] == 3
    assert sorted(health["nodes"]) == ["master", "worker1", "worker2"]
    assert health["nodes"]["master"] == {
        "info": {"name": "master", "ip": "127.0.0.1", "version": __version__, "type": "master", "n_active_agents": 1}
    }
    worker2 = health["nodes"]["worker2"]
    assert worker2["info"] == {
        "name": "worker2", "ip": "127.0.0.1", "version": __version__, "type": "worker", "n_active_agents": 0
    }
    status = worker2["status"]
    assert set(status) == {
        "sync_integrity_free", "last_sync_integrity", "sync_agentinfo_free", "last_sync_agentinfo",
        "sync_extravalid_free", "last_sync_agentgroups", "last_keep_alive",
    }
    integrity = status["last_sync_integrity"]
    assert integrity["total_files"] == {"shared": 0, "missing": 0, "extra": 0, "extra_valid": 0}
    for date in (integrity["date_start_master"], integrity["date_end_master"]):
        time.strptime(date, "%Y-%m-%d %H:%M:%S")
    assert status["last_sync_agentinfo"] == {"date_start_master": "n/a", "date_end_master": "n/a", "total_agentinfo": 0}
    assert status["last_sync_agentgroups"] == {"date_start_master": "n/a", "date_end_master": "n/a", "total_agentgroups": 0}
    assert status["sync_integrity_free"] is True and status["sync_extravalid_free"] is True
    # Keep-alives come every 0.5 s: the last one is a date, not n/a.
    time.strptime(status["last_keep_alive"], "%Y-%m-%d %H:%M:%S")

    # worker1 syncs every second: dates appear.
    async def synced() -> Any:
        entry = (await get(api.masterApi, "/cluster/healthcheck?node=worker1"))["nodes"]
        return entry if entry["worker1"]["status"]["last_sync_integrity"]["date_end_master"] != "n/a" else None

    shown = await eventually(synced, "worker1's first integrity sync in the healthcheck", api)
    assert list(shown) == ["worker1"]
    last = shown["worker1"]["status"]["last_sync_integrity"]
    for field in ("date_start_master", "date_end_master"):
        assert abs(time.mktime(time.strptime(last[field], "%Y-%m-%d %H:%M:%S")) - time.time()) < 60
    # The node filter takes several names; n_connected_nodes still counts them all.
    filtered = await get(api.masterApi, "/cluster/healthcheck?node=master,worker2")
    assert sorted(filtered["nodes"]) == ["master", "worker2"] and filtered["n_connected_nodes"] == 3
    assert (await get(api.masterApi, "/cluster/healthcheck?node=nobody"))["nodes"] == {}
    # A worker asks the master.
    assert sorted((await get(api.workerApi, "/cluster/healthcheck"))["nodes"]) == ["master", "worker1", "worker2"]


@pytest_twisted.ensureDeferred
async def test_authentication(api: ApiCluster) -> None:
    """Wrong or missing credentials: 401 and a challenge, and nothing else."""
    bodies = set()
    for target in (api.masterApi, api.workerApi):
        for auth in (None, (USER, "wrong password"), ("nobody", PASSWORD), (USER, ""), (SLOW_USER, PASSWORD)):
            for method, path in (("GET", "/no/such/url"), ("POST", "/cluster/master/files?path=etc/rules/x.xml")):
                answer = await ask(target, method, path, b"<x/>" if method == "POST" else None, auth=auth)
                assert answer.status == 401, (target.url, auth, method, path, answer)
                assert answer.header("www-authenticate") == ['basic realm="wazuh"'], answer.headers
                assert answer.json == {"error": 6100, "message": "Invalid credentials"}, answer.raw
                bodies.add(answer.raw)
    # The same answer whether the user exists or not.
    assert len(bodies) == 1, bodies
    # A header that is not Basic, or not base64, is refused the same way.
    for header in (b"Bearer abc", b"Basic !!!not-base64", b"Basic " + base64.b64encode(b"no-colon")):
        response = await api.masterApi.client.get(api.masterApi.url + "/", headers={b"Authorization": [header]})
        assert response.code == 401 and (await response.content()) in bodies, header
    # No file went anywhere.
    assert not (api.master.home / "etc" / "rules" / "x.xml").exists()

    # The right credentials, of either user, on either node.
    for target in (api.masterApi, api.workerApi):
        for auth in ((USER, PASSWORD), (SLOW_USER, SLOW_PASSWORD)):
            answer = await ask(target, "GET", "/", auth=auth)
            assert answer.ok, answer
            assert answer.data["node"] == target.node.node_name


@pytest_twisted.ensureDeferred
async def test_welcome_envelope_and_routing_errors(api: ApiCluster) -> None:
    welcome = await ask(api.masterApi, "GET", "/")
    assert welcome.header("content-type") == ["application/json; charset=utf-8"]
    assert b"\n" not in welcome.raw and b'{"error":0,"data":{' == welcome.raw[:19]
    data = welcome.data
    assert set(data) == {"msg", "api_version", "hostname", "node", "timestamp"}
    assert data["api_version"] == f"v{__version__}" and data["node"] == "master"
    assert data["hostname"] == socket.gethostname()
    assert abs(time.mktime(time.strptime(data["timestamp"], "%Y-%m-%d %H:%M:%S")) - time.time()) < 60

    # ?pretty indents by four, errors included; the content is the same.
    pretty = await ask(api.masterApi, "GET", "/cluster/node?pretty")
    assert pretty.raw.startswith(b'{\n    "error": 0,\n    "data": {\n        "node": "master"'), pretty.raw
    assert pretty.raw.endswith(b"}\n")
    assert pretty.json == (await ask(api.masterApi, "GET", "/cluster/node")).json
    prettyError = await ask(api.masterApi, "GET", "/nothing/here?pretty=true")
    assert prettyError.status == 400 and prettyError.raw.startswith(b'{\n    "error": 603,\n    "message": ')

    # 603: no such URL (400, as 3.x), whatever the method.
    for method, path in (("GET", "/nothing"), ("GET", "/cluster"), ("POST", "/agents/001/extra"),
                         ("GET", "/cluster/master/files/extra"), ("PUT", "/cluster/master")):
        message = await failure(api.masterApi, method, path, 603, 400)
        assert path.split("?")[0] in message

    # A known URL, another method: 603 too (3.x), with Allow.
    for method, path, allowed in (
        ("POST", "/cluster/status", "GET"),
        ("DELETE", "/cluster/nodes", "GET"),
        ("GET", "/cluster/restart", "PUT"),
        ("PUT", "/cluster/master/files?path=etc/rules/a.xml", "DELETE, GET, POST"),
        ("PUT", "/agents", "GET, POST"),
        ("POST", "/agents/001", "DELETE, GET"),
        ("GET", "/cluster/worker1/restart", "PUT"),
    ):
        answer = await ask(api.masterApi, method, path)
        assert answer.status == 400, (method, path, answer)
        assert answer.header("allow") == [allowed], (method, path, answer.headers)
        assert answer.json["error"] == 603
    assert not (api.master.home / "etc" / "rules" / "a.xml").exists()

    # The same routing on a worker.
    await failure(api.workerApi, "GET", "/nothing", 603, 400)
    assert (await ask(api.workerApi, "POST", "/cluster/status")).header("allow") == ["GET"]


@pytest_twisted.ensureDeferred
async def test_cluster_endpoints_on_the_master(api: ApiCluster) -> None:
    masterApi = api.masterApi
    assert await get(masterApi, "/cluster/status") == {"running": "yes", "enabled": "yes"}
    config = await ask(masterApi, "GET", "/cluster/config")
    assert api.cluster.key.encode() not in config.raw
    assert config.data == {
        "name": "wazuh", "node_name": "master", "node_type": "master", "key": "*" * len(api.cluster.key),
        "port": api.cluster.port, "bind_addr": "127.0.0.1", "nodes": ["127.0.0.1"],
        "hidden": "no", "disabled": "no",
    }
    assert await get(masterApi, "/cluster/node") == {"node": "master", "cluster": "wazuh", "type": "master"}

    def node(name: str, kind: str) -> dict[str, str]:
        return {"name": name, "ip": "127.0.0.1", "version": __version__, "type": kind}

    everyone = [node("master", "master"), node("worker1", "worker"), node("worker2", "worker")]
    assert await get(masterApi, "/cluster/nodes") == {"totalItems": 3, "items": everyone}
    assert await get(masterApi, "/cluster/nodes?type=all") == {"totalItems": 3, "items": everyone}
    assert await get(masterApi, "/cluster/nodes?type=master") == {"totalItems": 1, "items": everyone[:1]}
    assert await get(masterApi, "/cluster/nodes?type=worker") == {"totalItems": 2, "items": everyone[1:]}
    assert "bogus" in await failure(masterApi, "GET", "/cluster/nodes?type=bogus", 1728, 200)
    assert await get(masterApi, "/cluster/nodes/worker2") == node("worker2", "worker")
    assert await get(masterApi, "/cluster/nodes/master") == node("master", "master")
    assert "ghost" in await failure(masterApi, "GET", "/cluster/nodes/ghost", 1730, 200)

    # The list parameters.
    async def names(query: str) -> tuple[int, list[Any]]:
        page = await get(masterApi, "/cluster/nodes?" + query)
        return page["totalItems"], [item["name"] for item in page["items"]]

    assert await names("sort=-name") == (3, ["worker2", "worker1", "master"])
    assert await names("sort=%2Bname") == (3, ["master", "worker1", "worker2"])
    # 3.x: the leading sign orders every field; a field's own sign orders it.
    assert await names("sort=-type,name") == (3, ["worker2", "worker1", "master"])
    assert await names("sort=-type,%2Bname") == (3, ["worker1", "worker2", "master"])
    assert await names("offset=1&limit=1") == (3, ["worker1"])
    assert await names("offset=2") == (3, ["worker2"])
    assert await names("offset=5") == (3, [])
    assert await names("limit=2&sort=-name") == (3, ["worker2", "worker1"])
    assert await names("search=worker") == (2, ["worker1", "worker2"])
    assert await names("search=-worker") == (1, ["master"])
    assert await names("search=WORKER2") == (1, ["worker2"])
    assert await names("search=nothing-like-it") == (0, [])
    assert await names("type=worker&sort=-name&limit=1") == (2, ["worker2"])
    assert await get(masterApi, "/cluster/nodes?select=name,type&sort=-name&limit=2") == {
        "totalItems": 3, "items": [{"name": "worker2", "type": "worker"}, {"name": "worker1", "type": "worker"}],
    }
    assert "colour" in await failure(masterApi, "GET", "/cluster/nodes?sort=colour", 1403, 400)
    assert "colour" in await failure(masterApi, "GET", "/cluster/nodes?select=name,colour", 1724, 400)
    await failure(masterApi, "GET", "/cluster/nodes?limit=0", 1406, 400)
    await failure(masterApi, "GET", "/cluster/nodes?limit=ten", 600, 400)
    await failure(masterApi, "GET", "/cluster/nodes?offset=-1", 600, 400)
    await failure(masterApi, "GET", "/cluster/nodes?limit=-3", 600, 400)


@pytest_twisted.ensureDeferred
async def test_node_calls_run_on_the_named_node(api: ApiCluster) -> None:
    """info, status and stats of each node, asked of the master and of a worker."""
    for target in (api.masterApi, api.workerApi):
        for node in (api.master, api.worker1, api.worker2):
            info = await get(target, f"/cluster/{node.node_name}/info")
            assert set(info) == {
                "path", "version", "compilation_date", "type", "max_agents", "openssl_support", "ruleset_version",
                "tz_offset", "tz_name", "node", "cluster", "node_type", "cluster_version", "started",
            }
            assert info["node"] == node.node_name and info["node_type"] == node.node_type
            assert info["type"] == "server"  # 3.x: the installation's type
            assert info["path"] == str(node.home) and info["cluster"] == "wazuh"
            assert info["version"] == info["cluster_version"] == f"v{__version__}"  # no ossec-init.conf here
            assert len(info["tz_offset"]) == 5 and info["tz_offset"][0] in "+-"
            status = await get(target, f"/cluster/{node.node_name}/status")
            assert status["wazuh-clusterd"] == "running" and status["ossec-analysisd"] == "stopped"
            assert set(status.values()) == {"running", "stopped"} and len(status) == 15
        for path in ("/cluster/ghost/info", "/cluster/ghost/stats", "/cluster/ghost/files?path=etc/rules/a.xml"):
            assert "ghost" in await failure(target, "GET", path, 3022, 200)
        # A worker's API does not ask changes of another node at all (3030).
        change = (3022, 200) if target is api.masterApi else (3030, 403)
        await failure(target, "PUT", "/cluster/ghost/restart", *change)
        await failure(target, "POST", "/cluster/ghost/files?path=etc/rules/a.xml", *change, RULES_V1)
    # A worker's own API answers for itself without the master: see
    # test_a_worker_without_its_master, at the end.
    assert (await get(api.workerApi, "/cluster/node"))["node"] == "worker1"
    assert (await get(api.workerApi, "/cluster/config"))["node_type"] == "worker"
    # The worker lists the master's view of the cluster.
    assert await get(api.workerApi, "/cluster/nodes") == await get(api.masterApi, "/cluster/nodes")
    assert (await get(api.workerApi, "/cluster/nodes/worker2"))["name"] == "worker2"
    await failure(api.workerApi, "GET", "/cluster/nodes/ghost", 1730, 200)

    # Counters: keep-alives every 0.5 s, worker1 syncs every second.
    async def counted() -> Any:
        master = await get(api.workerApi, "/cluster/master/stats/cluster")
        worker1 = await get(api.masterApi, "/cluster/worker1/stats/cluster")
        ok = (master["keepalives_received"] > 0 and master["integrity_syncs"] > 0
              and worker1["keepalives_sent"] > 0 and worker1["integrity_syncs"] > 0)
        return (master, worker1) if ok else None

    master, worker1 = await eventually(counted, "keep-alives and integrity syncs in the counters", api)
    assert master["node"] == "master" and worker1["node"] == "worker1"
    assert master["keepalives_sent"] == 0 and worker1["keepalives_received"] == 0
    assert master["errors"] == 0 and worker1["errors"] == 0
    for stats in (master, worker1):
        time.strptime(stats["since"], "%Y-%m-%d %H:%M:%S")
        assert all(isinstance(v, int) and v >= 0 for k, v in stats.items() if k not in ("node", "since"))
    # Counters only grow.
    later = await eventually(
        lambda: _grown(api, worker1["keepalives_sent"]), "worker1 to send more keep-alives", api
    )
    assert later["integrity_syncs"] >= worker1["integrity_syncs"]
    # The worker's own API asks itself directly.
    assert (await get(api.workerApi, "/cluster/worker1/stats/cluster"))["keepalives_sent"] >= later["keepalives_sent"]


async def _grown(api: ApiCluster, before: int) -> Any:
    stats = await get(api.masterApi, "/cluster/worker1/stats/cluster")
    return stats if stats["keepalives_sent"] > before else None


#: q on /cluster/nodes -> the names it keeps (the nodes listed master first).
NODE_QUERIES = [
    ("name=master", ["master"]),
    ("name=MASTER", ["master"]),
    ("type=worker;name!=worker1", ["worker2"]),
    ("name=master,name=worker2", ["master", "worker2"]),
    ("name~worker", ["worker1", "worker2"]),
    ("name=master,type=worker;name=worker1", ["master", "worker1"]),
    ("(name=master,type=worker);name~2", ["worker2"]),
    ("ip=127.0.0.1;(type=master)", ["master"]),
    ("name>worker1", ["worker2"]),
    ("name<worker", ["master"]),
    ("name=nobody", []),
]

#: Queries that are not queries: the 3.x code (HTTP 400).
BAD_QUERIES = [("name", 1407), ("name=master;", 1407), ("(name=master", 1407), ("=x", 1407),
               ("name==master", 1409), ("name>=a", 1409), ("colour=red", 1408)]


@pytest_twisted.ensureDeferred
async def test_the_q_language(api: ApiCluster) -> None:
    """The 3.x query language on every list: nodes, agents (on the master and a worker) and logs."""
    for target in (api.masterApi, api.workerApi):
        for q, expected in NODE_QUERIES:
            page = await get(target, "/cluster/nodes?q=" + quote(q, safe=""))
            assert [n["name"] for n in page["items"]] == expected, (q, page)
            assert page["totalItems"] == len(expected)
        for q, code in BAD_QUERIES:
            await failure(target, "GET", "/cluster/nodes?q=" + quote(q, safe=""), code, 400)
            await failure(target, "GET", "/agents?q=" + quote(q, safe=""), code, 400)
        # With the other list parameters: q first, then search, sort, offset and limit, select.
        page = await get(target, "/cluster/nodes?q=type%3Dworker&sort=-name&limit=1&select=name")
        assert page == {"totalItems": 2, "items": [{"name": "worker2"}]}

        async def agents(q: str) -> list[str]:
            page = await get(target, "/agents?select=id&q=" + quote(q, safe=""))
            return [a["id"] for a in page["items"]]

        assert await agents("id=000") == ["000"]
        assert await agents("id=000;status=active;node_name=master") == ["000"]
        assert await agents("id=000;status=Active") == ["000"]
        assert await agents("id=000;status=never_connected") == []
        assert await agents("id=000;lastKeepAlive>9000-01-01") == ["000"]
        assert await agents("id=000;(name~zzz-no-such,ip=127.0.0.1)") == ["000"]
        assert "000" not in await agents("id!=000")


@pytest_twisted.ensureDeferred
async def test_agent_filters_of_3x(api: ApiCluster) -> None:
    """older_than, ip, the os and manager filters (nothing known of them), purge."""
    masterApi = api.masterApi
    added = (await ask(masterApi, "POST", "/agents", b'{"name": "api-older", "ip": "10.40.0.1"}')).data

    async def ids(query: str) -> list[str]:
        return [a["id"] for a in (await get(masterApi, "/agents?select=id&" + query))["items"]]

    assert await ids("name=api-older") == [added["id"]]
    assert await ids("ip=10.40.0.1") == [added["id"]]
    assert await ids("name=api-older&older_than=1d") == []     # added just now
    assert await ids("name=api-older&older_than=0s") == [added["id"]]
    assert "000" not in await ids("older_than=0")                # the manager is always seen
    assert await ids("name=api-older&os.name=ubuntu") == []
    assert await ids("name=api-older&manager=master") == []
    await failure(masterApi, "GET", "/agents?older_than=1w", 617, 400)
    await failure(masterApi, "GET", "/agents?ip=10.40.0", 606, 400)
    assert (await ask(masterApi, "DELETE", f"/agents/{added['id']}?purge")).data["affected_agents"] == [added["id"]]
    await failure(masterApi, "GET", f"/agents/{added['id']}", 1701, 200)


@pytest_twisted.ensureDeferred
async def test_parameters_and_routing_as_3x(api: ApiCluster) -> None:
    """Parameters are checked by type before anything runs; the first route of the table wins."""
    masterApi = api.masterApi
    for path, code in (
        ("/cluster/nodes?colour=red", 604), ("/cluster/status?x=1", 604), ("/agents/000?limit=1", 604),
        ("/cluster/nodes?offset=x", 600), ("/cluster/nodes?limit=1001", 1405),
        ("/cluster/nodes?sort=name%3Bx", 611), ("/cluster/nodes?search=a%3Bb", 612),
        ("/cluster/nodes?select=name%3Bx", 619), ("/cluster/healthcheck?node=a%20b", 601),
        ("/cluster/master/stats?date=2020", 605), ("/cluster/master/files?path=etc/rules/a%20b.xml", 608),
        ("/cluster/master/files?path=etc/rules/a.xml&validation=maybe", 618),
        ("/cluster/no%20such/info", 601), ("/agents/abc", 600), ("/cluster/nodes?pretty&wait_for_complete=no", 618),
        ("/cluster/master/configuration?field=port", 604),
    ):
        message = await failure(masterApi, "GET", path, code, 400)
        assert message, path
    assert "Allowed filters" in await failure(masterApi, "GET", "/cluster/nodes?colour=red", 604, 400)
    # pretty and wait_for_complete go everywhere.
    assert (await get(masterApi, "/cluster/status?wait_for_complete=true"))["running"] == "yes"
    # /cluster/nodes/NAME is always a node's name; /cluster/NAME/... a node's call.
    for word in ("info", "status", "stats", "logs", "files", "configuration"):
        assert word in await failure(masterApi, "GET", f"/cluster/nodes/{word}", 1730, 200)
    for path in ("/cluster/nodes/logs/summary", "/cluster/nodes/stats/hourly"):
        assert "nodes" in await failure(masterApi, "GET", path, 3022, 200)
    # As in 3.x (Express), GET /cluster/nodes/files is the node named "files", which takes no path...
    await failure(masterApi, "GET", "/cluster/nodes/files?path=etc/ossec.conf", 604, 400)
    # ... and POST, which /cluster/nodes/:node_name does not take, is a file of the node named "nodes".
    await failure(masterApi, "POST", "/cluster/nodes" + filePath("etc/rules/x.xml"), 3022, 200, RULES_V1)
    assert await get(masterApi, "/cluster/status") == {"running": "yes", "enabled": "yes"}
    # /manager/... is the node that took the request.
    assert (await get(masterApi, "/manager/info"))["node"] == "master"
    assert (await get(api.workerApi, "/manager/info"))["node"] == "worker1"
    assert (await get(api.workerApi, "/manager/status"))["wazuh-clusterd"] == "running"


OSSEC_LOG = (
    "2020/06/01 10:00:00 ossec-analysisd: INFO: Total rules enabled: '3652'\n"
    "2020/06/01 10:00:01 ossec-remoted[123] remoted.c:98 at main(): ERROR: (1206): Unable to bind to port 1514.\n"
    "2020/06/01 10:00:02 wazuh-modulesd:syscollector: WARNING: Evaluation took too long.\n"
    "2020/06/01 10:00:03 ossec-analysisd: WARNING: The event queue is 90% full.\n"
    "2020/06/01 10:00:04 ossec-analysisd: CRITICAL: (1226): Error reading XML file.\n"
)


@pytest_twisted.ensureDeferred
async def test_logs(api: ApiCluster) -> None:
    """worker2's ossec.log, read where it is (asked of the master and of worker1); none is an empty list."""
    (api.worker2.home / "logs").mkdir(exist_ok=True)
    (api.worker2.home / "logs" / "ossec.log").write_text(OSSEC_LOG)
    for target in (api.masterApi, api.workerApi):
        logs = await get(target, "/cluster/worker2/logs")
        assert logs["totalItems"] == 5
        assert logs["items"][0] == {
            "timestamp": "2020-06-01 10:00:04", "tag": "ossec-analysisd", "level": "critical",
            "description": "(1226): Error reading XML file.",
        }

        async def seconds(query: str) -> list[str]:
            page = await get(target, "/cluster/worker2/logs?" + query)
            return [e["timestamp"][-2:] for e in page["items"]]

        assert await seconds("type_log=warning") == ["03", "02"]
        assert await seconds("category=ossec-analysisd") == ["04", "03", "00"]
        assert await seconds("category=ossec-analysisd&type_log=warning") == ["03"]
        assert await seconds("q=" + quote("level=error,tag~modulesd", safe="") + "&sort=timestamp") == ["01", "02"]
        assert await seconds("search=bind") == ["01"]
        assert await seconds("search=-analysisd&limit=1") == ["02"]
        assert await seconds("offset=3&limit=5") == ["01", "00"]
        assert await seconds("sort=-level,timestamp") == ["03", "02", "00", "01", "04"]  # both descending
        assert await seconds("sort=-level,%2Btimestamp") == ["02", "03", "00", "01", "04"]
        page = await get(target, "/cluster/worker2/logs?select=tag&limit=1")
        assert page == {"totalItems": 5, "items": [{"tag": "ossec-analysisd"}]}
        await failure(target, "GET", "/cluster/worker2/logs?q=colour%3Dred", 1408, 400)
        await failure(target, "GET", "/cluster/worker2/logs?sort=colour", 1403, 400)
        summary = await get(target, "/cluster/worker2/logs/summary")
        assert summary == {
            "ossec-analysisd": {"all": 3, "info": 1, "error": 0, "warning": 1, "critical": 1, "debug": 0},
            "ossec-remoted": {"all": 1, "info": 0, "error": 1, "warning": 0, "critical": 0, "debug": 0},
            "wazuh-modulesd:syscollector": {"all": 1, "info": 0, "error": 0, "warning": 1, "critical": 0, "debug": 0},
        }
        # No ossec.log (no manager beside worker1): nothing, not an error.
        assert await get(target, "/cluster/worker1/logs") == {"totalItems": 0, "items": []}
        assert await get(target, "/cluster/worker1/logs/summary") == {}
    assert await get(api.masterApi, "/manager/logs?limit=1") == {"totalItems": 0, "items": []}


@pytest_twisted.ensureDeferred
async def test_configuration_and_statistics(api: ApiCluster) -> None:
    """ossec.conf as JSON, and analysisd's statistics files, of the node named."""
    for target in (api.masterApi, api.workerApi):
        assert await get(target, "/cluster/worker2/configuration?section=cluster&field=node_name") == "worker2"
        cluster = await get(target, "/cluster/worker2/configuration?section=cluster")
        assert cluster["node_type"] == "worker" and cluster["name"] == "wazuh"
        assert "cluster" in await get(target, "/cluster/master/configuration")
        await failure(target, "GET", "/cluster/worker2/configuration?section=nothing", 1102, 200)
        await failure(target, "GET", "/cluster/worker2/configuration?section=cluster&field=nothing", 1103, 200)
    assert (await get(api.workerApi, "/manager/configuration?section=cluster&field=node_name")) == "worker1"

    totals = api.worker2.home / "stats" / "totals" / "2020" / "Jun"
    totals.mkdir(parents=True, exist_ok=True)
    (totals / "ossec-totals-01.log").write_text("0-1002-2-4\n0--4--120--2--0\n1--0--80--0--0\n")
    hourly = api.worker2.home / "stats" / "hourly-average"
    hourly.mkdir(parents=True, exist_ok=True)
    for hour in range(24):
        (hourly / str(hour)).write_text(str(hour))
    (hourly / "24").write_text("3")
    for target in (api.masterApi, api.workerApi):
        assert await get(target, "/cluster/worker2/stats?date=20200601") == [
            {"hour": 0, "alerts": [{"sigid": 1002, "level": 2, "times": 4}], "totalAlerts": 4,
             "events": 120, "syscheck": 2, "firewall": 0},
            {"hour": 1, "alerts": [], "totalAlerts": 0, "events": 80, "syscheck": 0, "firewall": 0},
        ]
        await failure(target, "GET", "/cluster/worker2/stats?date=20200602", 1308, 200)
        await failure(target, "GET", "/cluster/worker2/stats", 1308, 200)  # today: none
        await failure(target, "GET", "/cluster/worker2/stats?date=20201399", 1307, 200)
        assert await get(target, "/cluster/worker2/stats/hourly") == {"averages": list(range(24)), "interactions": 3}
        weekly = await get(target, "/cluster/worker2/stats/weekly")
        assert list(weekly) == ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        assert (await get(target, "/cluster/worker1/stats/hourly")) == {"averages": [0] * 24, "interactions": 0}


@pytest_twisted.ensureDeferred
async def test_ossec_conf_and_the_ruleset_through_the_files_endpoints(api: ApiCluster) -> None:
    """ossec.conf read, checked and replaced atomically; Wazuh's ruleset read only; validation=true."""
    conf = api.worker1.home / "etc" / "ossec.conf"
    original = conf.read_bytes()
    path = filePath("etc/ossec.conf")
    for target in (api.masterApi, api.workerApi):
        assert (await get(target, "/cluster/worker1" + path)).encode() == original
        assert (await get(target, "/cluster/worker1" + path + "&validation=true")).encode() == original
        # 3.x takes offset and limit here, and does nothing with them.
        assert (await get(target, "/cluster/worker1" + path + "&offset=0&limit=5")).encode() == original
        await failure(target, "GET", "/cluster/worker1" + path + "&limit=x", 600, 400)
        await failure(target, "POST", "/cluster/worker1" + path, 1905, 200, original)
        for bad in (original.replace(b"</cluster>", b""), original.replace(b"<node_type>worker", b"<node_type>boss"),
                    b"<cluster><name>x</name></cluster>\n"):
            await failure(target, "POST", "/cluster/worker1" + filePath("etc/ossec.conf", overwrite=True), 703, 400, bad)
            assert conf.read_bytes() == original
    changed = original + b"<!-- changed through the API -->\n"
    answer = await ask(api.masterApi, "POST", "/cluster/worker1" + filePath("etc/ossec.conf", overwrite=True), changed,
                       contentType="application/xml")
    assert answer.data == "File updated successfully"
    assert conf.read_bytes() == changed
    await failure(api.masterApi, "DELETE", "/cluster/worker1" + path, 704, 400)
    conf.write_bytes(original)

    # Wazuh's default ruleset, under HOME/ruleset: read only.
    rules = api.master.home / "ruleset" / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "0010-rules_config.xml").write_bytes(RULES_V1)
    (rules / "0020-broken.xml").write_bytes(b"<group><rule></group>\n")
    for target in (api.masterApi, api.workerApi):
        for prefix in ("/cluster/master", "/manager" if target is api.masterApi else "/cluster/master"):
            assert (await get(target, prefix + filePath("ruleset/rules/0010-rules_config.xml"))).encode() == RULES_V1
            # Through a worker's API, a change of the master is refused before its path is looked at.
            change = (704, 400) if target is api.masterApi else (3030, 403)
            await failure(target, "POST", prefix + filePath("ruleset/rules/0010-rules_config.xml", True), *change, RULES_V1)
            await failure(target, "DELETE", prefix + filePath("ruleset/rules/0010-rules_config.xml"), *change)
            assert (await get(target, prefix + filePath("ruleset/rules/0020-broken.xml"))) == "<group><rule></group>\n"
            await failure(target, "GET", prefix + filePath("ruleset/rules/0020-broken.xml") + "&validation=true", 1113, 200)
            await failure(target, "GET", prefix + filePath("ruleset/decoders/none.xml"), 1005, 200)
    assert (rules / "0010-rules_config.xml").read_bytes() == RULES_V1


@pytest_twisted.ensureDeferred
async def test_big_file_through_the_cluster_link(api: ApiCluster) -> None:
    """
    A file over 64 KiB written on worker2 through the master (and through
    worker1 and the master) arrives byte for byte, and reads back the same:
    bodies and answers over 32 KiB cross the links as streams.
    """
    big = bigRules()
    assert len(big) > 64 * 1024
    relpath = "etc/rules/api_big_rules.xml"
    onWorker2 = api.worker2.home / relpath

    written = await ask(api.masterApi, "POST", "/cluster/worker2" + filePath(relpath), big)
    assert written.data == "File updated successfully"
    assert onWorker2.read_bytes() == big
    assert oct(onWorker2.stat().st_mode & 0o777) == "0o660"
    assert not (api.master.home / relpath).exists()
    assert (await get(api.masterApi, "/cluster/worker2" + filePath(relpath))).encode() == big
    # worker1 -> master -> worker2, and the answer back the same way.
    assert (await get(api.workerApi, "/cluster/worker2" + filePath(relpath))).encode() == big

    # Several at once, from both APIs: each answer is whole.
    answers = await gatherResults([
        Deferred.fromCoroutine(get(target, "/cluster/worker2" + filePath(relpath)))
        for target in (api.masterApi, api.workerApi) * 4
    ])
    assert all(answer.encode() == big for answer in answers)

    # A changed version: worker1's API may not write on another node (only the
    # master asks changes of a node); the master's may.
    changed = big.replace(b"</group>", b"</group>\n<!-- changed through the master -->", 1)
    assert changed != big
    message = await failure(api.workerApi, "POST", "/cluster/worker2" + filePath(relpath, overwrite=True), 3030, 403, changed)
    assert "use the master's API" in message
    await failure(api.masterApi, "POST", "/cluster/worker2" + filePath(relpath), 1905, 200, changed)
    assert onWorker2.read_bytes() == big
    answer = await ask(api.masterApi, "POST", "/cluster/worker2" + filePath(relpath, overwrite=True), changed)
    assert answer.data == "File updated successfully"
    assert onWorker2.read_bytes() == changed
    assert (await get(api.masterApi, "/cluster/worker2" + filePath(relpath))).encode() == changed

    # An invalid big file is refused there, with worker2's message.
    broken = changed + b"<unclosed>"
    message = await failure(api.masterApi, "POST", "/cluster/worker2" + filePath(relpath, overwrite=True), 703, 400, broken)
    assert "line" in message
    assert onWorker2.read_bytes() == changed
    # The largest file taken, 16 MiB exactly, whose JSON answer is larger still
    # (quotes and backslashes escaped): both ways.
    largest = big * (MAX_FILE_SIZE // len(big))
    padding = MAX_FILE_SIZE - len(largest) - len(b"<!---->\n")
    largest += b"<!--" + (b'"\\<>\t&' * padding)[:padding] + b"-->\n"
    assert len(largest) == MAX_FILE_SIZE
    answer = await ask(api.masterApi, "POST", "/cluster/worker2" + filePath(relpath, overwrite=True), largest)
    assert answer.ok, answer.raw
    assert onWorker2.read_bytes() == largest
    read = await ask(api.masterApi, "GET", "/cluster/worker2" + filePath(relpath))
    assert len(read.raw) > MAX_FILE_SIZE and read.data.encode() == largest
    del largest, read

    answer = await ask(api.masterApi, "DELETE", "/cluster/worker2" + filePath(relpath))
    assert answer.data == "File was deleted"
    assert not onWorker2.exists()


@pytest_twisted.ensureDeferred
async def test_symbolic_links_do_not_lead_out(api: ApiCluster) -> None:
    """
    Links under etc/rules (made by hand on worker2, which does not sync on
    its own) lead nowhere: no reading, writing or deleting what they point to.
    """
    home = api.worker2.home
    conf = home / "etc" / "ossec.conf"
    original = conf.read_bytes()
    (home / "etc" / "rules").mkdir(parents=True, exist_ok=True)
    links = [home / "etc" / "rules" / "api-link.xml", home / "etc" / "rules" / "api-dir"]
    links[0].symlink_to(conf)
    links[1].symlink_to(home / "etc")
    try:
        for path in ("etc/rules/api-link.xml", "etc/rules/api-dir/ossec.conf", "etc/rules/api-dir/new.xml"):
            for target in (api.masterApi, api.workerApi):
                await failure(target, "GET", "/cluster/worker2" + filePath(path), 704, 400)
            await failure(api.masterApi, "POST", "/cluster/worker2" + filePath(path, overwrite=True), 704, 400, RULES_V1)
            await failure(api.masterApi, "DELETE", "/cluster/worker2" + filePath(path), 704, 400)
        assert conf.read_bytes() == original
        assert links[0].is_symlink() and not (home / "etc" / "new.xml").exists()
    finally:
        for link in links:
            link.unlink()


@pytest_twisted.ensureDeferred
async def test_files_are_checked_and_reach_the_workers(api: ApiCluster) -> None:
    masterApi = api.masterApi
    sentBefore = (await get(masterApi, "/cluster/master/stats/cluster"))["integrity_files_sent"]
    receivedBefore = (await get(masterApi, "/cluster/worker1/stats/cluster"))["integrity_files_received"]
    confs = {node: (node.home / "etc" / "ossec.conf").read_bytes() for node in (api.master, api.worker1)}
    # 704: only etc/ossec.conf, etc/rules, etc/decoders and etc/lists (and ruleset/ to read), never out of them.
    for path in (
        "etc/internal_options.conf", "etc/client.keys", "/etc/passwd", "etc/ossec.conf.bak",
        str(api.master.home / "etc" / "rules" / "local_rules.xml"),
        "etc/rules/../internal_options.conf", "etc/rules/../../etc/ossec.conf", "etc/lists/../../../etc/passwd",
        "etc/rules/", "etc/rules", "etc/rulesx/a.xml", "queue/agent-groups/001", "etc/shared/default/agent.conf",
        "etc/rules/ossec.conf",
    ):
        for node in ("master", "worker1"):
            await failure(masterApi, "GET", f"/cluster/{node}" + filePath(path), 704, 400)
            await failure(masterApi, "POST", f"/cluster/{node}" + filePath(path, overwrite=True), 704, 400, RULES_V1)
            await failure(masterApi, "DELETE", f"/cluster/{node}" + filePath(path), 704, 400)
    assert confs == {node: (node.home / "etc" / "ossec.conf").read_bytes() for node in confs}
    assert not (api.master.home / "etc" / "internal_options.conf").exists()
    # 706: no path at all.
    for method in ("GET", "POST", "DELETE"):
        assert "path" in await failure(masterApi, method, "/cluster/master/files", 706, 400, b"")
        await failure(masterApi, method, "/cluster/master/files?path=", 706, 400, b"")
    # Nothing there: 1005 to read, 1906 to delete (as 3.x).
    for node in ("master", "worker1"):
        await failure(masterApi, "GET", f"/cluster/{node}" + filePath("etc/rules/none.xml"), 1005, 200)
        await failure(masterApi, "DELETE", f"/cluster/{node}" + filePath("etc/decoders/none.xml"), 1906, 200)
    # 703: rules and decoders must be well-formed XML; 705: lists key:value lines.
    for bad in (b"<group><rule></group>", b"<rule id='1'>", b"not xml <"):
        await failure(masterApi, "POST", "/cluster/master" + filePath("etc/rules/bad.xml"), 703, 400, bad)
        await failure(masterApi, "POST", "/cluster/worker1" + filePath("etc/decoders/bad.xml"), 703, 400, bad)
    for bad in (b"key-without-value\n", b"a:b\nno colon here\n"):
        await failure(masterApi, "POST", "/cluster/master" + filePath("etc/lists/bad-list"), 705, 400, bad)
    # 1911: not UTF-8; 1909: empty.
    await failure(masterApi, "POST", "/cluster/master" + filePath("etc/rules/bad.xml"), 1911, 200, b"\xff\xfe<rule/>")
    await failure(masterApi, "POST", "/cluster/master" + filePath("etc/lists/bad-list"), 1911, 200, b"\xff:x\n")
    await failure(masterApi, "POST", "/cluster/master" + filePath("etc/lists/bad-list"), 1909, 200, b"")
    # 804: a file comes as application/octet-stream or application/xml.
    for contentType in ("", "application/json", "text/plain", "application/x-www-form-urlencoded"):
        answer = await ask(masterApi, "POST", "/cluster/master" + filePath("etc/rules/bad.xml"), RULES_V1,
                           contentType=contentType)
        assert (answer.status, answer.json["error"]) == (400, 804), (contentType, answer.raw)
    assert (await ask(masterApi, "POST", "/cluster/master" + filePath("etc/rules/ok-xml.xml"), RULES_V1,
                      contentType="application/xml; charset=utf-8")).ok
    assert (await ask(masterApi, "DELETE", "/cluster/master" + filePath("etc/rules/ok-xml.xml"))).data
    # Too large: over 16 MiB for a file (614), over 17 MiB for any body (614, HTTP 413).
    huge = b"<!-- " + b"x" * (16 * 1024 * 1024) + b" -->\n"
    assert "larger" in await failure(masterApi, "POST", "/cluster/master" + filePath("etc/rules/huge.xml"), 614, 400, huge)
    huger = huge + b"y" * (1024 * 1024)
    answer = await ask(masterApi, "POST", "/cluster/master" + filePath("etc/rules/huge.xml"), huger)
    assert answer.status == 413 and answer.json["error"] == 614, answer.raw[:300]
    assert not (api.master.home / "etc" / "rules" / "huge.xml").exists()
    assert not (api.master.home / "etc" / "rules" / "bad.xml").exists()
    assert not (api.master.home / "etc" / "lists" / "bad-list").exists()
    assert not (api.worker1.home / "etc" / "decoders" / "bad.xml").exists()

    # Written on the master, then 1905 unless overwrite=true.
    files = {
        "etc/rules/api_rules.xml": RULES_V1,
        "etc/decoders/api_decoders.xml": b'<decoder name="api-test">\n  <prematch>^api: </prematch>\n</decoder>\n',
        "etc/lists/api-list": b'10.0.0.1:trusted\n"quoted key":value\nempty:\n',
        "etc/rules/sub/folder/nested.xml": b"<!-- only a comment -->\n",
    }
    for path, content in files.items():
        answer = await ask(masterApi, "POST", "/cluster/master" + filePath(path), content)
        assert answer.data == "File updated successfully"
        assert (api.master.home / path).read_bytes() == content
        assert await get(masterApi, "/cluster/master" + filePath(path)) == content.decode()
    rules = "etc/rules/api_rules.xml"
    assert rules in await failure(masterApi, "POST", "/cluster/master" + filePath(rules), 1905, 200, RULES_V2)
    assert (api.master.home / rules).read_bytes() == RULES_V1
    assert (await ask(masterApi, "POST", "/cluster/master" + filePath(rules, overwrite=True), RULES_V2)).ok
    assert (api.master.home / rules).read_bytes() == RULES_V2
    files[rules] = RULES_V2
    # Worker1's API cannot write on the master: a worker never changes the master.
    viaWorker = "etc/decoders/via_worker1.xml"
    await failure(api.workerApi, "POST", "/cluster/master" + filePath(viaWorker), 3030, 403, RULES_V1)
    assert not (api.master.home / viaWorker).exists()

    # Integrity sync takes them to the workers (worker2 is told the master changed).
    for worker in (api.worker1, api.worker2):
        async def arrived(worker: Node = worker) -> bool:
            return all(readOrNone(worker.home / p) == c for p, c in files.items())

        await eventually(arrived, f"the API's files to reach {worker.node_name}", api)
        for path, content in files.items():
            assert await get(masterApi, f"/cluster/{worker.node_name}" + filePath(path)) == content.decode()
    assert await get(api.workerApi, "/cluster/worker1" + filePath(rules)) == RULES_V2.decode()
    # The counters saw the files go (4 files, to each of two workers).
    assert (await get(masterApi, "/cluster/master/stats/cluster"))["integrity_files_sent"] >= sentBefore + 8
    assert (await get(api.workerApi, "/cluster/worker1/stats/cluster"))["integrity_files_received"] >= receivedBefore + 4

    # Deleted on the master: gone there at once, from the workers after a sync.
    for path in files:
        answer = await ask(masterApi, "DELETE", "/cluster/master" + filePath(path))
        assert answer.data == "File was deleted"
        assert not (api.master.home / path).exists()
        await failure(masterApi, "GET", "/cluster/master" + filePath(path), 1005, 200)
    for worker in (api.worker1, api.worker2):
        async def gone(worker: Node = worker) -> bool:
            return not any((worker.home / p).exists() for p in files)

        await eventually(gone, f"the deletions to reach {worker.node_name}", api)
        await failure(masterApi, "GET", f"/cluster/{worker.node_name}" + filePath(rules), 1005, 200)


async def _run(*arguments: str) -> tuple[bytes, bytes, int]:
    return await getProcessOutputAndValue(sys.executable, arguments, env=dict(os.environ))


def _keysLine(node: Node, agentID: str) -> str:
    lines = (node.home / "etc" / "client.keys").read_text().splitlines()
    (line,) = [line for line in lines if line.split(" ")[0] == agentID]
    return line


@pytest_twisted.ensureDeferred
async def test_agents(api: ApiCluster) -> None:
    masterApi, workerApi = api.masterApi, api.workerApi
    before = await get(masterApi, "/agents")
    (manager,) = [item for item in before["items"] if item["id"] == "000"]
    assert manager == {
        "id": "000", "name": manager["name"], "ip": "127.0.0.1", "status": "Active", "node_name": "master",
        "version": None, "lastKeepAlive": "9999-12-31 23:59:59", "dateAdd": None, "group": None,
    }

    # Registered on the master: its client.keys, and the key is the base64 of that line.
    added = await ask(masterApi, "POST", "/agents", json.dumps({"name": "api-web", "ip": "10.20.0.5"}).encode())
    web = added.data
    assert set(web) == {"id", "key"}
    line = _keysLine(api.master, web["id"])
    assert line.startswith(f"{web['id']} api-web 10.20.0.5 ")
    assert base64.b64decode(web["key"]).decode() == line
    # Through worker1's API: forwarded to the master (the worker's own copy comes by sync).
    added = await ask(workerApi, "POST", "/agents", json.dumps({"name": "api-db"}).encode())
    db = added.data
    assert _keysLine(api.master, db["id"]).startswith(f"{db['id']} api-db any ")
    assert base64.b64decode(db["key"]).decode() == _keysLine(api.master, db["id"])
    assert int(db["id"]) == int(web["id"]) + 1
    # Refusals: a name (1705) or address (1706) in use, with the master's reason; bad bodies.
    message = await failure(masterApi, "POST", "/agents", 1705, 200, json.dumps({"name": "api-web", "ip": "any"}).encode())
    assert "api-web" in message
    message = await failure(workerApi, "POST", "/agents", 1706, 200, json.dumps({"name": "api-other", "ip": "10.20.0.5"}).encode())
    assert "10.20.0.5" in message
    for bad, code in ((b"{not json", 614), (b"[1, 2]", 614), (b'"text"', 614), (b"{}", 604), (b'{"ip": "10.1.1.1"}', 604),
                      (b'{"name": 5}', 601), (b'{"name": ""}', 604), (b'{"name": "x", "ip": 5}', 606),
                      (b'{"name": "bad name!"}', 601), (b'{"name": "ok-name", "ip": "not-an-address"}', 606),
                      (b'{"name": "x", "force": "yes"}', 600)):
        await failure(masterApi, "POST", "/agents", code, 400, bad)
        await failure(workerApi, "POST", "/agents", code, 400, bad)
    await failure(masterApi, "POST", "/agents", 1738, 200, json.dumps({"name": "x" * 200}).encode())
    assert "api-other" not in (api.master.home / "etc" / "client.keys").read_text()
    assert "ok-name" not in (api.master.home / "etc" / "client.keys").read_text()
    assert await get(masterApi, "/agents/000") == manager

    # A status written on worker1 (once it has the agent) shows the agent Active there.
    keys = api.worker1.home / "etc" / "client.keys"
    await eventually(lambda: _succeed(b" api-web 10.20.0.5 " in (readOrNone(keys) or b"")),
                     "client.keys to reach worker1", api)
    out, err, code = await _run("-m", "wazuhcluster.agents.agentinfo", "--home", str(api.worker1.home),
                                "api-web", "10.20.0.5")
    assert code == 0, err

    async def active() -> Any:
        item = await get(masterApi, f"/agents/{web['id']}")
        return item if (item["status"], item["node_name"]) == ("Active", "worker1") else None

    item = await eventually(active, "api-web to be Active on worker1", api)
    health = (await get(masterApi, "/cluster/healthcheck?node=worker1"))["nodes"]["worker1"]
    assert health["info"]["n_active_agents"] == 1
    agentInfo = health["status"]["last_sync_agentinfo"]
    assert agentInfo["date_end_master"] != "n/a" and agentInfo["total_agentinfo"] >= 1, agentInfo
    assert item["name"] == "api-web" and item["ip"] == "10.20.0.5" and item["version"].endswith("4.9.0")
    assert item["group"] == ["default"]
    for field in ("lastKeepAlive", "dateAdd"):
        assert abs(time.mktime(time.strptime(item[field], "%Y-%m-%d %H:%M:%S")) - time.time()) < 120, item

    listed = await get(masterApi, "/agents")
    ids = [i["id"] for i in listed["items"]]
    assert listed["totalItems"] == len(ids) and {"000", web["id"], db["id"]} <= set(ids)
    byID = {i["id"]: i for i in listed["items"]}
    assert byID[db["id"]]["status"] == "Never connected" and byID[db["id"]]["node_name"] == "unknown"
    assert byID[db["id"]]["lastKeepAlive"] is None
    # The worker's API lists what the master knows.
    assert (await get(workerApi, f"/agents/{web['id']}"))["node_name"] == "worker1"
    assert await get(workerApi, "/agents?sort=id") == await get(masterApi, "/agents?sort=id")

    # Filters.
    async def agentIDs(query: str, target: Any = masterApi) -> tuple[int, list[str]]:
        page = await get(target, "/agents?" + query)
        return page["totalItems"], [i["id"] for i in page["items"]]

    assert await agentIDs("status=active&sort=id") == (2, ["000", web["id"]])
    assert await agentIDs("status=Active,never_connected&sort=-id") == (3, [db["id"], web["id"], "000"])
    assert await agentIDs("status=Never%20connected") == (1, [db["id"]])
    assert await agentIDs("status=disconnected") == (0, [])
    assert await agentIDs("node_name=worker1") == (1, [web["id"]])
    assert await agentIDs("node_name=master,unknown&sort=id") == (2, ["000", db["id"]])
    assert await agentIDs("node_name=worker1&status=active", workerApi) == (1, [web["id"]])
    assert "sleepy" in await failure(masterApi, "GET", "/agents?status=sleepy", 1729, 200)
    # The list parameters.
    assert await agentIDs("sort=-id&limit=2") == (3, [db["id"], web["id"]])
    assert await agentIDs("sort=id&offset=1&limit=1") == (3, [web["id"]])
    assert await agentIDs("sort=name,id&search=api-") == (2, [db["id"], web["id"]])
    assert await agentIDs("search=10.20.0.5") == (1, [web["id"]])
    assert await agentIDs("search=-api-&sort=id") == (1, ["000"])
    assert await get(masterApi, "/agents?select=id,status,node_name&sort=id") == {
        "totalItems": 3,
        "items": [
            {"id": "000", "status": "Active", "node_name": "master"},
            {"id": web["id"], "status": "Active", "node_name": "worker1"},
            {"id": db["id"], "status": "Never connected", "node_name": "unknown"},
        ],
    }
    await failure(masterApi, "GET", "/agents?sort=colour", 1403, 400)
    await failure(masterApi, "GET", "/agents?select=id,colour", 1724, 400)
    await failure(masterApi, "GET", "/agents?limit=0", 1406, 400)
    await failure(masterApi, "GET", "/agents?offset=x", 600, 400)
    await failure(workerApi, "GET", "/agents?sort=-colour", 1403, 400)
    await failure(masterApi, "GET", "/agents/999", 1701, 200)
    await failure(workerApi, "GET", "/agents/999", 1701, 200)
    # An ID without its zeros is the same agent.
    assert await get(masterApi, f"/agents/{int(web['id'])}") == await get(masterApi, f"/agents/{web['id']}")
    assert await get(workerApi, "/agents/0") == manager

    # The statuses went through the agent-info sync, and the counters say so.
    stats = await get(masterApi, "/cluster/master/stats/cluster")
    assert stats["agentinfo_statuses_received"] >= 1 and stats["agentinfo_syncs"] >= 1
    assert (await get(masterApi, "/cluster/worker1/stats/cluster"))["agentinfo_statuses_sent"] >= 1

    # Removal: the manager never; an unknown agent is 1701; through the worker too.
    await failure(masterApi, "DELETE", "/agents/000", 1703, 200)
    await failure(masterApi, "DELETE", "/agents/999", 1701, 200)
    removed = await ask(workerApi, "DELETE", f"/agents/{db['id']}")
    assert removed.data == {"msg": "All selected agents were removed", "affected_agents": [db["id"]]}
    assert _keysLine(api.master, db["id"]).startswith(f"{db['id']} !api-db any ")
    removed = await ask(masterApi, "DELETE", f"/agents/{web['id']}")
    assert removed.data == {"msg": "All selected agents were removed", "affected_agents": [web["id"]]}
    assert _keysLine(api.master, web["id"]).startswith(f"{web['id']} !api-web 10.20.0.5 ")
    assert not (api.master.home / "queue" / "agent-info" / "api-web-10.20.0.5").exists()
    for agentID in (web["id"], db["id"]):
        await failure(masterApi, "GET", f"/agents/{agentID}", 1701, 200)
        await failure(masterApi, "DELETE", f"/agents/{agentID}", 1701, 200)
    assert await agentIDs("") == (1, ["000"])
    # "force": true (or 0) replaces an agent of the same name; anything but a boolean or number is 600.
    first = (await ask(masterApi, "POST", "/agents", b'{"name": "api-tmp", "ip": "10.30.0.1"}')).data
    message = await failure(masterApi, "POST", "/agents", 1705, 200, b'{"name": "api-tmp", "ip": "10.30.0.2"}')
    assert "api-tmp" in message and '"force": 0' in message and "--force" not in message, message
    await failure(masterApi, "POST", "/agents", 600, 400, b'{"name": "api-tmp", "force": "yes"}')
    second = (await ask(workerApi, "POST", "/agents", b'{"name": "api-tmp", "ip": "10.30.0.2", "force": true}')).data
    assert int(second["id"]) > int(first["id"])
    assert _keysLine(api.master, first["id"]).startswith(f"{first['id']} !api-tmp 10.30.0.1 ")
    assert base64.b64decode(second["key"]).decode() == _keysLine(api.master, second["id"])
    assert await agentIDs("sort=id") == (2, ["000", second["id"]])
    removed = await ask(masterApi, "DELETE", f"/agents/{int(second['id'])}")
    assert removed.data["affected_agents"] == [second["id"]]
    assert await agentIDs("") == (1, ["000"])
    await eventually(lambda: _succeed(not (api.worker1.home / "queue" / "agent-info" / "api-web-10.20.0.5").exists()),
                     "the removed agent's status to leave worker1", api)


async def _succeed(value: T) -> T:
    return value


@pytest_twisted.ensureDeferred
async def test_many_agents_at_once(api: ApiCluster) -> None:
    """
    Registrations sent together through both APIs get distinct IDs; the list
    (which crosses the worker's link in pages) is whole and pages as asked.
    """
    names = [f"bulk-{i:03d}" for i in range(100)]  # more than a page (80) of ListAgents
    added = await gatherResults([
        Deferred.fromCoroutine(ask(api.masterApi if i % 2 else api.workerApi, "POST", "/agents",
                                   json.dumps({"name": name}).encode()))
        for i, name in enumerate(names)
    ])
    ids = {answer.data["id"]: name for answer, name in zip(added, names)}
    assert len(ids) == len(names)
    idOf = {name: agentID for agentID, name in ids.items()}
    keys = (api.master.home / "etc" / "client.keys").read_text()
    for agentID, name in ids.items():
        assert f"\n{agentID} {name} any " in "\n" + keys
    try:
        for target in (api.masterApi, api.workerApi):
            page = await get(target, "/agents?search=bulk-&sort=name&select=id,name")
            assert page["totalItems"] == len(names)
            assert [item["name"] for item in page["items"]] == names
            assert [item["id"] for item in page["items"]] == sorted(ids, key=ids.get)
            page = await get(target, "/agents?search=bulk-&sort=-name&offset=75&limit=15&select=name")
            # As in 3.x, an agent's id is always selected.
            assert page == {"totalItems": 100, "items": [{"id": idOf[n], "name": n} for n in names[::-1][75:90]]}
            page = await get(target, "/agents?status=never_connected&limit=7")
            assert page["totalItems"] >= 100 and len(page["items"]) == 7
    finally:
        # Half through each API, at the same time: each worker call pages the
        # agents over the link while the others change the registry.
        removed = await gatherResults([
            Deferred.fromCoroutine(ask(api.masterApi if n % 2 else api.workerApi, "DELETE", f"/agents/{agentID}"))
            for n, agentID in enumerate(ids)
        ])
    assert sorted(answer.data["affected_agents"][0] for answer in removed) == sorted(ids)
    assert (await get(api.masterApi, "/agents?search=bulk-"))["totalItems"] == 0


@pytest_twisted.ensureDeferred
async def test_agent_pages_come_from_one_listing(api: ApiCluster) -> None:
    """
    A client paging through the agents (as a worker's API does over its
    link, and cluster_control over the control socket) gets every agent of
    the listing its first page came from, even if the registry changes and
    someone else lists the agents meanwhile.
    """
    from wazuhcluster.control.blocking import callControl
    from wazuhcluster.protocol.agentcommands import ListAgents

    names = [f"page-{i:03d}" for i in range(ListAgents.pageSize + 10)]
    added = await gatherResults([
        Deferred.fromCoroutine(ask(api.masterApi, "POST", "/agents", json.dumps({"name": name}).encode()))
        for name in names
    ])
    ids = sorted(answer.data["id"] for answer in added)

    def page(offset: int, listing: str = "") -> dict[str, Any]:
        return callControl(str(api.master.control_socket), ListAgents, offset=offset, limit=ListAgents.pageSize,
                           statuses=[], nodes=[], details=True, listing=listing)

    try:
        first = page(0)
        assert first["listing"], "a listing of several pages is named for its later pages"
        listed = [agent["id"] for agent in first["agents"]]
        # Meanwhile, through the master's API: one agent removed, the agents listed.
        assert (await ask(api.masterApi, "DELETE", f"/agents/{ids[0]}")).ok
        assert (await get(api.masterApi, "/agents?limit=1"))["totalItems"] == first["total"] - 1
        while len(listed) < first["total"]:
            more = page(len(listed), first["listing"])
            if not more["agents"]:
                break
            listed.extend(agent["id"] for agent in more["agents"])
        # Every agent of the first page's listing, once: the manager and all of ours.
        assert listed == sorted(listed) and len(set(listed)) == len(listed), listed
        assert set(ids) <= set(listed), sorted(set(ids) - set(listed))
    finally:
        await gatherResults([
            Deferred.fromCoroutine(ask(api.masterApi, "DELETE", f"/agents/{agentID}")) for agentID in ids[1:]
        ])


@pytest_twisted.ensureDeferred
async def test_restart(api: ApiCluster) -> None:
    """The restart command runs on the nodes named, after the answer."""
    for marker in api.markers.values():
        marker.unlink(missing_ok=True)

    started = time.monotonic()
    answer = await ask(api.masterApi, "PUT", "/cluster/worker1/restart")
    took = time.monotonic() - started
    assert answer.data == "Restarting manager"
    # Answered at once: the command (which waits 1.5 s before writing) has not finished.
    assert took < 1.2 and not api.markers["worker1"].exists(), took
    await eventually(lambda: _succeed(readOrNone(api.markers["worker1"]) == b"restarted\n"),
                     "worker1's restart command to run", api)
    assert not api.markers["master"].exists() and not api.markers["worker2"].exists()

    # The worker's API cannot restart another node; the master's restarts every node.
    await failure(api.workerApi, "PUT", "/cluster/master/restart", 3030, 403)
    started = time.monotonic()
    answer = await ask(api.masterApi, "PUT", "/cluster/restart")
    took = time.monotonic() - started
    # The workers first, the master last.
    assert answer.data == {
        "msg": "Restarting cluster", "affected_nodes": ["worker1", "worker2", "master"], "failed_nodes": {},
    }
    assert took < 1.2, took

    async def ranEverywhere() -> bool:
        return (readOrNone(api.markers["master"]) == b"restarted\n"
                and readOrNone(api.markers["worker1"]) == b"restarted\nrestarted\n"
                and readOrNone(api.markers["worker2"]) == b"restarted\n")

    await eventually(ranEverywhere, "the restart command to run on every node", api)
    # The command only ran: every node is still up.
    assert (await get(api.masterApi, "/cluster/nodes"))["totalItems"] == 3
    for node in (api.master, api.worker1, api.worker2):
        node.assert_running()
        assert "Restart requested through the API" in node.log_text()

    # The master restarts itself alone.
    answer = await ask(api.masterApi, "PUT", "/cluster/master/restart")
    assert answer.data == "Restarting manager"
    await eventually(lambda: _succeed(readOrNone(api.markers["master"]) == b"restarted\nrestarted\n"),
                     "the master's restart command to run", api)


@pytest_twisted.ensureDeferred
async def test_worker_api_defaults_and_tls(api: ApiCluster) -> None:
    """worker2's API is off (a worker's default); worker1 serves its own certificate."""
    assert port_is_bindable(api.worker2Port)
    # A client that trusts only worker1's own certificate talks to it; one that
    # checks certificates the usual way refuses it (self-signed).
    assert (await get(api.workerApi, "/"))["node"] == "worker1"
    from twisted.internet import reactor

    strict = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    with pytest.raises(ResponseNeverReceived):
        await strict.get(api.workerApi.url + "/", auth=(USER, PASSWORD))
    # Plain HTTP to the HTTPS port gets no API answer.
    try:
        response = await _client().get(api.workerApi.url.replace("https:", "http:") + "/", auth=(USER, PASSWORD))
    except Exception:
        pass
    else:
        assert response.code != 200 and b"worker1" not in await response.content()


@pytest_twisted.ensureDeferred
async def test_a_frozen_worker(api: ApiCluster) -> None:
    """
    worker2 frozen (SIGSTOP): a call to it fails with 3021 (HTTP 504) when
    the master drops its link for missed keep-alives, then 3022; thawed, it
    rejoins and answers again.
    """
    api.worker2.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        await failure(api.masterApi, "GET", "/cluster/worker2/info", 3021, 200)
        assert time.monotonic() - started < 15
        await eventually(lambda: _succeed(api.master.listed_names() == ["master", "worker1"]),
                         "the master to drop worker2", api)
        await failure(api.masterApi, "GET", "/cluster/worker2/info", 3022, 200)
        await failure(api.workerApi, "GET", "/cluster/worker2/stats/cluster", 3022, 200)
        assert (await get(api.masterApi, "/cluster/nodes"))["totalItems"] == 2
    finally:
        api.worker2.signal(signal.SIGCONT)

    async def back() -> bool:
        answer = await ask(api.masterApi, "GET", "/cluster/worker2/info")
        return answer.ok

    await eventually(back, "worker2 to rejoin", api)
    assert (await get(api.workerApi, "/cluster/worker2/info"))["path"] == str(api.worker2.home)


async def _stopTheMaster(api: ApiCluster) -> None:
    if api.master.running():
        api.master.stop()
    await eventually(lambda: _succeed("Lost connection to master" in api.worker1.log_text()),
                     "worker1 to lose the master", api, alive=[api.worker1, api.worker2])


@pytest_twisted.ensureDeferred
async def test_a_worker_without_its_master(api: ApiCluster) -> None:
    """Last: the master stops; the worker's API says the master is unreachable (503)."""
    await _stopTheMaster(api)
    for method, path in (("GET", "/cluster/nodes"), ("GET", "/cluster/nodes/worker1"), ("GET", "/cluster/healthcheck"),
                         ("GET", "/agents"), ("GET", "/agents/000"), ("DELETE", "/agents/001"),
                         ("GET", "/cluster/master/info"), ("GET", "/cluster/worker2/stats/cluster"),
                         ("PUT", "/cluster/restart")):
        await failure(api.workerApi, method, path, 3023, 200)
    # Changes of another node are refused before the link is even needed.
    await failure(api.workerApi, "PUT", "/cluster/master/restart", 3030, 403)
    await failure(api.workerApi, "POST", "/cluster/master" + filePath("etc/rules/late.xml"), 3030, 403, RULES_V1)
    # What the worker answers for itself still works.
    assert (await get(api.workerApi, "/cluster/worker1/info"))["path"] == str(api.worker1.home)
    assert (await get(api.workerApi, "/cluster/node"))["node"] == "worker1"
    assert (await get(api.workerApi, "/cluster/status")) == {"running": "yes", "enabled": "yes"}
    await failure(api.workerApi, "GET", "/cluster/worker1" + filePath("etc/rules/none.xml"), 1005, 200)


@pytest_twisted.ensureDeferred
async def test_registration_through_a_worker_without_its_master(api: ApiCluster) -> None:
    """
    Like every call that needs the master: 3023 (HTTP 200, as 3.x), which a
    client may retry; nothing changes on the worker.
    """
    await _stopTheMaster(api)
    message = await failure(api.workerApi, "POST", "/agents", 3023, 200, b'{"name": "late", "ip": "10.9.9.9"}')
    assert "not connected to master" in message, message
    assert " late " not in (readOrNone(api.worker1.home / "etc" / "client.keys") or b"").decode()


# A node alone: its users file, its own certificate, a restart that fails. ------------


def _usersCommand(node: Node, *arguments: str, password: str | None = None) -> str:
    """Run C{cluster_api_users --home HOME ARGUMENTS} (the password on stdin); its output."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", "from wazuhcluster.api.users_cli import main; main()", "--home", str(node.home),
         *arguments],
        input=None if password is None else password + "\n", capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest_twisted.ensureDeferred
async def test_users_certificate_and_failing_restart(cluster: Cluster, tmp_path: Path) -> None:
    """
    A master with its own cluster: the users file is read at every request
    (added, changed, removed users count at once; a damaged file lets nobody
    in); HTTPS with the configured certificate; a restart command that cannot
    run is error 1900, or a failed node in the answer of PUT /cluster/restart.
    """
    from cryptography.hazmat.primitives import serialization

    from wazuhcluster.tls import makeSelfSigned

    master = cluster.master(options=OPTIONS)
    worker = cluster.worker("worker1", options=OPTIONS)
    port = free_port()
    ssl = master.home / "api" / "configuration" / "ssl"
    ssl.mkdir(parents=True)
    key, certificate = makeSelfSigned("api.example")
    (ssl / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (ssl / "server.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (master.home / "api" / "configuration" / "api.yaml").write_text(
        f"port: {port}\n"
        "https:\n  enabled: yes\n  cert: api/configuration/ssl/server.crt\n  key: api/configuration/ssl/server.key\n"
        "restart_command: [no-such-command-of-wazuhcluster-tests, restart]\n"
    )
    marker = tmp_path / "worker-restarted"
    _apiSettings(worker, marker)
    assert _usersCommand(master, "add", "bob", password="bob's password") == "User bob added.\n"
    master.start().wait_ready()
    worker.start().wait_joined()
    wait_for(lambda: not port_is_bindable(port), "the API to listen", alive=[master])
    lone = Api(master, f"https://127.0.0.1:{port}", _client(_PinnedPolicy(ssl / "server.crt")))
    bob = ("bob", "bob's password")

    assert (await ask(lone, "GET", "/cluster/node", auth=bob)).data["node"] == "master"
    # The node's own certificate is not the one served.
    nodeCert = _client(_PinnedPolicy(master.node_cert))
    with pytest.raises(ResponseNeverReceived):
        await nodeCert.get(lone.url + "/", auth=bob)

    # A restart command that cannot run: 1900, naming it.
    answer = await ask(lone, "PUT", "/cluster/master/restart", auth=bob)
    assert answer.status == 200 and answer.json["error"] == 1900, answer.raw
    assert "no-such-command-of-wazuhcluster-tests" in answer.json["message"]
    # Every node: the worker's command started, the master's is the failure.
    answer = await ask(lone, "PUT", "/cluster/restart", auth=bob)
    data = answer.data
    assert data["msg"] == "Restarting cluster" and data["affected_nodes"] == ["worker1"], data
    assert list(data["failed_nodes"]) == ["master"] and data["failed_nodes"]["master"]["error"] == 1900, data
    assert "no-such-command-of-wazuhcluster-tests" in data["failed_nodes"]["master"]["message"]
    wait_for(lambda: readOrNone(marker) == b"restarted\n", "the worker's restart command to run", alive=[master, worker])
    # No node's command started: 1900.
    worker.stop()
    wait_for(lambda: master.listed_names() == ["master"], "the master to see the worker go", alive=[master])
    answer = await ask(lone, "PUT", "/cluster/restart", auth=bob)
    assert answer.status == 200 and answer.json["error"] == 1900, answer.raw
    assert "master: " in answer.json["message"] and "no-such-command-of-wazuhcluster-tests" in answer.json["message"]

    # Users change while the node runs.
    assert _usersCommand(master, "add", "carol", password="carol's password") == "User carol added.\n"
    assert (await ask(lone, "GET", "/", auth=("carol", "carol's password"))).ok
    assert _usersCommand(master, "passwd", "bob", password="bob's new password") == "Password of bob changed.\n"
    assert (await ask(lone, "GET", "/", auth=bob)).status == 401
    assert (await ask(lone, "GET", "/", auth=("bob", "bob's new password"))).ok
    assert _usersCommand(master, "remove", "carol") == "User carol removed.\n"
    assert (await ask(lone, "GET", "/", auth=("carol", "carol's password"))).status == 401
    assert _usersCommand(master, "list") == "bob\n"
    # Names with @ and passwords beyond ASCII (UTF-8 in the Basic header).
    assert _usersCommand(master, "add", "dora@example.org", password="pässwörd ✓ ünïcode")
    answer = await ask(lone, "GET", "/", auth=("dora@example.org", "pässwörd ✓ ünïcode"))
    assert answer.ok, answer
    assert (await ask(lone, "GET", "/", auth=("dora@example.org", "passwort ✓ ünïcode"))).status == 401

    # A damaged users file: nobody, and the log says why; mended, bob again.
    users = master.home / "api" / "configuration" / "users.json"
    good = users.read_bytes()
    users.write_text('{"users": {"bob": "plain text password"}}')
    answer = await ask(lone, "GET", "/", auth=("bob", "bob's new password"))
    assert answer.status == 401 and answer.header("www-authenticate") == ['basic realm="wazuh"']
    assert answer.json == {"error": 6100, "message": "Invalid credentials"}, answer.raw
    master.wait_log("damaged")
    users.write_bytes(good)
    assert (await ask(lone, "GET", "/", auth=("bob", "bob's new password"))).ok
    users.unlink()
    assert (await ask(lone, "GET", "/", auth=("bob", "bob's new password"))).status == 401
    master.assert_running()


# Bad settings stop the node at start. --------------------------------------------


@pytest.mark.parametrize(
    ("text", "setting", "words"),
    [
        ("port: 99999\n", "port", ["99999", "1 to 65535"]),
        ("port: http\n", "port", ["'http'"]),
        ("host: localhost\n", "host", ["'localhost'", "IP address"]),
        ("enabled: maybe\n", "enabled", ["'maybe'", "yes or no"]),
        ("https:\n  enabled: perhaps\n", "https.enabled", ["'perhaps'"]),
        ("https:\n  enabled: yes\n  cert: only-a-cert.pem\n", "https", ["cert and key"]),
        ("htps:\n  enabled: yes\n", "htps", ["unknown setting"]),
        ("restart_command: []\n", "restart_command", ["list"]),
        ("port: [55000\n", "", ["not valid YAML"]),
        ("- a list\n", "", ["mapping"]),
        ("https:\n  enabled: yes\n  cert: missing.crt\n  key: missing.key\n", "https", ["cannot read", "missing.key"]),
    ],
)
def test_bad_api_settings_stop_the_node(cluster: Cluster, text: str, setting: str, words: list[str]) -> None:
    master = cluster.master()
    settings = master.home / "api" / "configuration" / "api.yaml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(text)
    result, took = run_twistd(master.conf, master.home)
    assert result.returncode != 0, result.stdout + result.stderr
    assert took < 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("wazuh-clusterd: CRITICAL: "), line
    assert str(settings) in line, line
    if setting:
        assert f": {setting}: " in line, line
    for word in words:
        assert word in line, line
    assert not master.control_socket.exists()


def test_api_port_in_use_stops_the_master(cluster: Cluster) -> None:
    """Like the cluster port: the master says which address it cannot listen on, and exits 1."""
    port = free_port()
    master = cluster.master()
    settings = master.home / "api" / "configuration" / "api.yaml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f"port: {port}\n")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        result, took = run_twistd(master.conf, master.home)
        assert result.returncode == 1, result.stdout + result.stderr
        assert took < 10
        said = result.stdout + result.stderr + master.log_text()
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in said, said
    finally:
        blocker.close()
    master.start().wait_ready()
    wait_for(lambda: not port_is_bindable(port), "the API to listen once the port is free", alive=[master])
