"""
The API's parts on their own: list parameters, api.yaml, the routing and the
envelope, a node's file operations, and calls carried to another node over
real (in-memory) TLS.
"""

from __future__ import annotations

import json
import os

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.support.memorynet import MasterHarness, MemoryNetwork, settings
from wazuhcluster.api.envelope import ApiError, listOf
from wazuhcluster.api.localnode import LocalNode
from wazuhcluster.api.nodecalls import INLINE_LIMIT, NodeCalls
from wazuhcluster.api.router import ApiResource, Route
from wazuhcluster.api.settings import loadApiSettings
from wazuhcluster.config import ConfigError
from wazuhcluster.home import WazuhHome
from wazuhcluster.worker.connection import MasterConnectionFactory
from wazuhcluster.stats import NodeStats

ITEMS = [
    {"name": "master", "ip": "10.0.0.1", "type": "master"},
    {"name": "node03", "ip": "10.0.0.3", "type": "worker"},
    {"name": "node02", "ip": "10.0.0.2", "type": "worker"},
]
FIELDS = ("name", "ip", "type")


class ListParameterTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(listOf(ITEMS, {}, FIELDS), {"totalItems": 3, "items": ITEMS})

    def test_offsetLimit(self) -> None:
        self.assertEqual(listOf(ITEMS, {"offset": "1", "limit": "1"}, FIELDS)["items"], [ITEMS[1]])
        self.assertEqual(listOf(ITEMS, {"offset": "1", "limit": "1"}, FIELDS)["totalItems"], 3)
        self.assertEqual(self.assertRaises(ApiError, listOf, ITEMS, {"limit": "0"}, FIELDS).code, 1406)
        self.assertEqual(self.assertRaises(ApiError, listOf, ITEMS, {"limit": "x"}, FIELDS).code, 600)
        self.assertEqual(self.assertRaises(ApiError, listOf, ITEMS, {"offset": "-1"}, FIELDS).code, 600)

    def test_sort(self) -> None:
        names = lambda q: [i["name"] for i in listOf(ITEMS, q, FIELDS)["items"]]  # noqa: E731
        self.assertEqual(names({"sort": "+name"}), ["master", "node02", "node03"])
        self.assertEqual(names({"sort": "-name"}), ["node03", "node02", "master"])
        self.assertEqual(names({"sort": "-type,name"}), ["node02", "node03", "master"])
        self.assertEqual(self.assertRaises(ApiError, listOf, ITEMS, {"sort": "+age"}, FIELDS).code, 1403)

    def test_searchAndSelect(self) -> None:
        self.assertEqual(listOf(ITEMS, {"search": "10.0.0.2"}, FIELDS)["items"], [ITEMS[2]])
        self.assertEqual(listOf(ITEMS, {"search": "-worker"}, FIELDS)["items"], [ITEMS[0]])
        self.assertEqual(
            listOf(ITEMS, {"select": "name"}, FIELDS)["items"], [{"name": i["name"]} for i in ITEMS]
        )
        error = self.assertRaises(ApiError, listOf, ITEMS, {"select": "name,age"}, FIELDS)
        self.assertEqual(error.code, 1724)
        self.assertIn("age", error.message)


class ApiSettingsTests(SynchronousTestCase):
    def home(self, text: str | None) -> WazuhHome:
        home = WazuhHome(os.path.abspath(self.mktemp()))
        if text is not None:
            os.makedirs(home.path("api", "configuration"))
            with open(home.path("api", "configuration", "api.yaml"), "w") as f:
                f.write(text)
        return home

    def test_defaults(self) -> None:
        home = self.home(None)
        master, worker = loadApiSettings(home, True), loadApiSettings(home, False)
        self.assertEqual((master.enabled, master.host, master.port, master.https), (True, "127.0.0.1", 55000, False))
        self.assertFalse(worker.enabled)
        self.assertEqual(master.restartCommand, (home.path("bin", "wazuh-control"), "restart"))

    def test_wazuhLayout(self) -> None:
        home = self.home(
            "enabled: yes\nhost: 0.0.0.0\nport: 55001\n"
            "https:\n  enabled: yes\n  cert: api/ssl/server.crt\n  key: /etc/ssl/server.key\n"
            "restart_command: [systemctl, restart, wazuh-manager]\n"
        )
        loaded = loadApiSettings(home, False)
        self.assertEqual((loaded.enabled, loaded.host, loaded.port, loaded.https), (True, "0.0.0.0", 55001, True))
        self.assertEqual((loaded.cert, loaded.key), (home.path("api/ssl/server.crt"), "/etc/ssl/server.key"))
        self.assertEqual(loaded.restartCommand, ("systemctl", "restart", "wazuh-manager"))

    def test_problemsNameFileAndSetting(self) -> None:
        for text, fragment in [
            ("port: 99999\n", "port: 99999 is not a port number"),
            ("host: localhost\n", "host: 'localhost' is not an IP address"),
            ("enabled: maybe\n", "enabled: 'maybe' is not yes or no"),
            ("prot: 1\n", "prot: unknown setting"),
            ("https:\n  enabled: yes\n  cert: a.crt\n", "https: give both cert and key"),
            ("port: [1\n", "not valid YAML"),
            ("- a\n", "must be a mapping"),
            ("restart_command: []\n", "restart_command: must be a command"),
        ]:
            home = self.home(text)
            error = self.assertRaises(ConfigError, loadApiSettings, home, True)
            self.assertIn("api.yaml", str(error))
            self.assertIn(fragment, str(error))


class RouterTests(SynchronousTestCase):
    def resource(self) -> ApiResource:
        async def hello(call):
            return {"who": call.params["name"], "q": call.query.get("q")}

        async def broken(call):
            raise ApiError(1701, "007", status=404)

        async def post(call):
            return call.json()

        return ApiResource([
            Route("GET", "/hello/:name", hello),
            Route("GET", "/broken", broken),
            Route("POST", "/hello/:name", post),
        ])

    def request(self, method: bytes, path: str, body: bytes = b"") -> tuple[int, dict]:
        request = DummyRequest(path.split("?")[0].strip("/").split("/"))
        request.method = method
        request.path = path.split("?")[0].encode()
        request.uri = path.encode()
        request.content = __import__("io").BytesIO(body)
        result = self.resource().render(request)
        if isinstance(result, bytes):
            request.write(result)
            request.finish()
        self.assertEqual(request.finished, 1)
        return request.responseCode or 200, json.loads(b"".join(request.written))

    def test_envelope(self) -> None:
        self.assertEqual(
            self.request(b"GET", "/hello/node02?q=1"), (200, {"error": 0, "data": {"who": "node02", "q": "1"}})
        )
        self.assertEqual(
            self.request(b"GET", "/broken"), (404, {"error": 1701, "message": "Agent does not exist: 007"})
        )

    def test_unknownPathAndMethod(self) -> None:
        status, body = self.request(b"GET", "/nothing/here")
        self.assertEqual((status, body["error"]), (404, 603))
        status, body = self.request(b"DELETE", "/hello/x")
        self.assertEqual((status, body["error"]), (405, 604))
        self.assertIn("GET, POST", body["message"])

    def test_percentEncodedSegmentsAndHead(self) -> None:
        self.assertEqual(self.request(b"GET", "/hello/node%2002%2Fx")[1]["data"]["who"], "node 02/x")
        self.assertEqual(self.request(b"HEAD", "/hello/x")[0], 200)

    def test_jsonBody(self) -> None:
        self.assertEqual(self.request(b"POST", "/hello/x", b'{"a": 1}'), (200, {"error": 0, "data": {"a": 1}}))
        self.assertEqual(self.request(b"POST", "/hello/x", b"[1]")[1]["error"], 605)
        self.assertEqual(self.request(b"POST", "/hello/x", b"{nope")[1]["error"], 605)


def inline(f, *args):
    try:
        return succeed(f(*args))
    except BaseException:
        from twisted.internet.defer import fail

        return fail()


class LocalFilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(self.home.path("etc", "rules"))
        self.node = LocalNode(self.home, "master", "wazuh", "master", "4.9.0", NodeStats(), ["true"], inline)

    def run_(self, operation: str, body: bytes = b"", **arguments) -> object:
        return Deferred.fromCoroutine(self.node.run(operation, arguments, body))

    def code(self, d: Deferred) -> int:
        return self.failureResultOf(d, ApiError).value.code

    def test_writeReadDelete(self) -> None:
        rule = b"<!-- local -->\n<group name='local,'>\n  <rule id='100001' level='5'/>\n</group>\n"
        self.successResultOf(self.run_("files.put", rule, path="etc/rules/local.xml"))
        self.assertEqual(self.successResultOf(self.run_("files.get", path="etc/rules/local.xml")), rule.decode())
        self.assertEqual(os.stat(self.home.path("etc/rules/local.xml")).st_mode & 0o777, 0o660)
        self.assertEqual(self.code(self.run_("files.put", rule, path="etc/rules/local.xml")), 1905)
        self.successResultOf(self.run_("files.put", rule, path="etc/rules/local.xml", overwrite=True))
        self.successResultOf(self.run_("files.delete", path="etc/rules/local.xml"))
        self.assertEqual(self.code(self.run_("files.get", path="etc/rules/local.xml")), 1005)
        self.assertEqual(self.code(self.run_("files.delete", path="etc/rules/local.xml")), 1005)

    def test_onlyRulesDecodersLists(self) -> None:
        os.symlink("/etc", self.home.path("etc/rules/escape"))
        for path in ["etc/internal_options.conf", "etc/client.keys", "etc/rules/../ossec.conf", "/etc/passwd",
                     "etc/rules/escape/passwd", "etc/lists/", "etc/rules/ossec.conf", "etc/shared/default/agent.conf",
                     "etc/rules/.wazuhcluster-x.tmp"]:
            self.assertEqual(self.code(self.run_("files.get", path=path)), 704, path)
            self.assertEqual(self.code(self.run_("files.put", b"<a/>", path=path)), 704, path)
        self.assertFalse(os.path.exists("/etc/passwd.tmp"))

    def test_checksContent(self) -> None:
        self.assertEqual(self.code(self.run_("files.put", b"<group><rule></group>", path="etc/rules/x.xml")), 703)
        self.assertEqual(self.code(self.run_("files.put", b"<!DOCTYPE x>", path="etc/decoders/x.xml")), 703)
        self.assertEqual(self.code(self.run_("files.put", b"\xff\xfe", path="etc/rules/x.xml")), 703)
        self.successResultOf(self.run_(
            "files.put", b'10.0.0.1:malicious\n"quoted key: with colon":\nadmin:\n\nbad-host.example.com:x\n',
            path="etc/lists/blacklist",
        ))
        for bad in [b"no colon here\n", b"a:b:c\n", b"bad&key:1\n", b"50%:x\n", b":value\n"]:
            self.assertEqual(self.code(self.run_("files.put", bad, path="etc/lists/l2")), 705, bad)
        self.assertFalse(os.path.exists(self.home.path("etc/lists/l2")))


class NodeCallTests(SynchronousTestCase):
    """A call named for a worker, made on the master, runs on the worker over the link."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.master = MasterHarness(self.clock)
        self.workerHome = WazuhHome(os.path.abspath(self.mktemp()))
        os.makedirs(self.workerHome.path("etc", "rules"))
        masterHome = WazuhHome(os.path.abspath(self.mktemp()))
        workerNode = LocalNode(self.workerHome, "node02", "wazuh", "worker", "4.9.0", NodeStats(), ["true"], inline)
        masterNode = LocalNode(masterHome, "master-node", "wazuh", "master", "4.9.0", NodeStats(), ["true"], inline)

        def toWorker(name):
            connection = self.master.fleet.workers.get(name)
            if connection is None:
                raise ApiError(3022, name, status=404)
            return connection

        self.masterCalls = NodeCalls(masterNode, self.clock, toWorker, isMaster=True)
        self.master.factory.nodeCalls = self.masterCalls
        self.master.factory.sinksFor = self.masterCalls.sinksFor
        self.workerCalls = NodeCalls(workerNode, self.clock, lambda name: None, isMaster=False)
        original = MasterConnectionFactory.buildProtocol
        calls = self.workerCalls

        def build(factory, addr):
            factory.nodeCalls = calls
            return original(factory, addr)

        self.patch(MasterConnectionFactory, "buildProtocol", build)
        _, joined = self.net.joinWorker(self.master, settings("node02"), sinksFor=calls.sinksFor)
        self.successResultOf(joined)

    def call(self, node: str, operation: str, body: bytes = b"", **arguments) -> Deferred:
        d = Deferred.fromCoroutine(self.masterCalls.call(node, operation, arguments, body))
        for _ in range(30):
            self.net.flush()
            self.clock.advance(0)
        return d

    def test_infoOfAWorker(self) -> None:
        info = self.successResultOf(self.call("node02", "info"))
        self.assertEqual((info["node"], info["path"]), ("node02", self.workerHome.root))
        self.assertEqual(self.successResultOf(self.call("master-node", "info"))["node"], "master-node")

    def test_largeBodyAndAnswerCrossAsStreams(self) -> None:
        rule = b"<group name='big,'>\n" + b"  <!-- padding padding padding -->\n" * 4000 + b"</group>\n"
        self.assertGreater(len(rule), 2 * INLINE_LIMIT)
        self.successResultOf(self.call("node02", "files.put", rule, path="etc/rules/big.xml"))
        with open(self.workerHome.path("etc/rules/big.xml"), "rb") as f:
            self.assertEqual(f.read(), rule)
        self.assertEqual(self.successResultOf(self.call("node02", "files.get", path="etc/rules/big.xml")), rule.decode())
        self.assertEqual(self.masterCalls.blobs._blobs, {})
        self.assertEqual(self.workerCalls.blobs._blobs, {})

    def test_errorsComeBack(self) -> None:
        failure = self.failureResultOf(self.call("node02", "files.get", path="etc/ossec.conf"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (704, 400))
        failure = self.failureResultOf(self.call("node09", "info"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (3022, 404))
