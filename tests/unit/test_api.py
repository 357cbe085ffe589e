"""
The API's parts on their own (the list parameters are in test_filters): api.yaml, the routing and the
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
from wazuhcluster.api.envelope import ApiError
from wazuhcluster.api.localnode import LocalNode
from wazuhcluster.api.nodecalls import INLINE_LIMIT, NodeCalls
from wazuhcluster.api.router import ApiResource, Route
from wazuhcluster.api.settings import loadApiSettings
from wazuhcluster.config import ConfigError
from wazuhcluster.home import WazuhHome
from wazuhcluster.worker.connection import MasterConnectionFactory
from wazuhcluster.stats import NodeStats

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
            return {"who": call.params.get("name", call.params.get("node_id")), "q": call.query.get("q")}

        async def broken(call):
            raise ApiError(1701, "007")

        async def internal(call):
            raise ValueError("a bug")

        async def post(call):
            return call.json()

        return ApiResource([
            Route("GET", "/hello/:name", hello),
            Route("GET", "/broken", broken),
            Route("GET", "/internal", internal),
            Route("GET", "/typed/:node_id", hello, parameters={"limit": "numbers", "flag": "boolean"}),
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
            self.request(b"GET", "/hello/node02"), (200, {"error": 0, "data": {"who": "node02", "q": None}})
        )
        self.assertEqual(
            self.request(b"GET", "/broken"), (200, {"error": 1701, "message": "Agent does not exist: 007"})
        )
        status, body = self.request(b"GET", "/internal")
        self.assertEqual((status, body["error"]), (500, 3))
        self.flushLoggedErrors(ValueError)

    def test_unknownPathAndMethod(self) -> None:
        status, body = self.request(b"GET", "/nothing/here")
        self.assertEqual((status, body["error"]), (400, 603))
        status, body = self.request(b"DELETE", "/hello/x")
        self.assertEqual((status, body["error"]), (400, 603))
        self.assertIn("GET, POST", body["message"])

    def test_parameters(self) -> None:
        """Checked by the router, before the handler, with the 3.x codes."""
        self.assertEqual(self.request(b"GET", "/typed/n1?limit=3&flag=true&pretty&wait_for_complete=true")[0], 200)
        for path, code in (
            ("/typed/n1?colour=red", 604), ("/typed/n1?limit=x", 600), ("/typed/n1?flag=yes", 618),
            ("/typed/n%201", 601), ("/typed/n1?wait_for_complete=maybe", 618), ("/hello/x?q=1", 604),
        ):
            status, body = self.request(b"GET", path)
            self.assertEqual((status, body["error"]), (400, code), path)

    def test_percentEncodedSegmentsAndHead(self) -> None:
        self.assertEqual(self.request(b"GET", "/hello/node%2D02")[1]["data"]["who"], "node-02")
        self.assertEqual(self.request(b"GET", "/hello/node02%2Fx")[1]["error"], 601)  # "/" is no name
        self.assertEqual(self.request(b"HEAD", "/hello/x")[0], 200)

    def test_jsonBody(self) -> None:
        self.assertEqual(self.request(b"POST", "/hello/x", b'{"a": 1}'), (200, {"error": 0, "data": {"a": 1}}))
        self.assertEqual(self.request(b"POST", "/hello/x", b"[1]"), (400, {"error": 614, "message": "Invalid request. The body must be a JSON object"}))
        self.assertEqual(self.request(b"POST", "/hello/x", b"{nope")[1]["error"], 614)


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
        self.assertEqual(self.code(self.run_("files.put", rule, path="etc/rules/local.xml", overwrite="false")), 1905)
        self.successResultOf(self.run_("files.put", rule, path="etc/rules/local.xml", overwrite="true"))
        self.successResultOf(self.run_("files.delete", path="etc/rules/local.xml"))
        self.assertEqual(self.code(self.run_("files.get", path="etc/rules/local.xml")), 1005)
        self.assertEqual(self.code(self.run_("files.delete", path="etc/rules/local.xml")), 1906)

    def test_onlyRulesDecodersLists(self) -> None:
        os.symlink("/etc", self.home.path("etc/rules/escape"))
        for path in ["etc/internal_options.conf", "etc/client.keys", "etc/rules/../ossec.conf", "/etc/passwd",
                     "etc/rules/escape/passwd", "etc/lists/", "etc/rules/ossec.conf", "etc/shared/default/agent.conf",
                     "etc/rules/.wazuhcluster-x.tmp", "etc/rules/escape/x.xml", "etc/rules/./x.xml", "etc",
                     "ruleset/rules/../../etc/client.keys", "ruleset/lists/x", "etc/ossec.conf.bak"]:
            self.assertEqual(self.code(self.run_("files.get", path=path)), 704, path)
            self.assertEqual(self.code(self.run_("files.put", b"<a/>", path=path)), 704, path)
        self.assertFalse(os.path.exists("/etc/passwd.tmp"))

    def test_checksContent(self) -> None:
        self.assertEqual(self.code(self.run_("files.put", b"<group><rule></group>", path="etc/rules/x.xml")), 703)
        self.assertEqual(self.code(self.run_("files.put", b"<!DOCTYPE x>", path="etc/decoders/x.xml")), 703)
        self.assertEqual(self.code(self.run_("files.put", b"\xff\xfe", path="etc/rules/x.xml")), 1911)
        self.assertEqual(self.code(self.run_("files.put", b" \n", path="etc/rules/x.xml")), 1909)
        self.successResultOf(self.run_(
            "files.put", b'10.0.0.1:malicious\n"quoted key: with colon":\nadmin:\n\nbad-host.example.com:x\n',
            path="etc/lists/blacklist",
        ))
        for bad in [b"no colon here\n", b"a:b:c\n", b"bad&key:1\n", b"50%:x\n", b":value\n"]:
            self.assertEqual(self.code(self.run_("files.put", bad, path="etc/lists/l2")), 705, bad)
        self.assertFalse(os.path.exists(self.home.path("etc/lists/l2")))


OSSEC_CONF = b"""<ossec_config>
  <global>
    <jsonout_output>yes</jsonout_output>
    <email_notification>no</email_notification>
  </global>
  <cluster>
    <name>wazuh</name>
    <node_name>master</node_name>
    <node_type>master</node_type>
    <key>c98b62a9b6169ac5f67dae55ae4a9088</key>
    <port>1516</port>
    <bind_addr>0.0.0.0</bind_addr>
    <nodes><node>127.0.0.1</node></nodes>
    <hidden>no</hidden>
    <disabled>no</disabled>
  </cluster>
</ossec_config>
<ossec_config>
  <localfile><log_format>syslog</log_format><location>/var/log/auth.log</location></localfile>
  <localfile><log_format>syslog</log_format><location>/var/log/syslog</location></localfile>
</ossec_config>
"""

LOG = (
    "2020/06/01 10:00:00 ossec-analysisd: INFO: Total rules enabled: '3652'\n"
    "2020/06/01 10:00:01 ossec-remoted[123] remoted.c:98 at main(): ERROR: (1206): Unable to bind.\n"
    "  a continuation line\n"
    "2020/06/01 10:00:02 wazuh-modulesd:syscollector: WARNING: Slow.\n"
    "2020/06/01 10:00:03 ossec-analysisd: WARNING: Again.\n"
    "garbage without a date at the start? no: after an entry it continues it\n"
)


class LocalManagerTests(SynchronousTestCase):
    """What a node answers of the Wazuh manager beside it: ossec.conf, the ruleset, logs, stats, status."""

    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        for folder in ("etc", "ruleset/rules", "logs", "var/run"):
            os.makedirs(self.home.path(folder))
        self.node = LocalNode(self.home, "master", "wazuh", "master", "4.9.0", NodeStats(), ["true"], inline)

    def run_(self, operation: str, body: bytes = b"", **arguments) -> object:
        return Deferred.fromCoroutine(self.node.run(operation, arguments, body))

    def code(self, d: Deferred) -> int:
        return self.failureResultOf(d, ApiError).value.code

    def test_ossecConf(self) -> None:
        path = "etc/ossec.conf"
        self.successResultOf(self.run_("files.put", OSSEC_CONF, path=path))
        self.assertEqual(self.successResultOf(self.run_("files.get", path=path, validation="true")), OSSEC_CONF.decode())
        broken = [
            OSSEC_CONF.replace(b"</global>", b""),                       # not XML
            OSSEC_CONF.replace(b"<port>1516</port>", b"<port>nope</port>"),  # a <cluster> we refuse
            b"<global><x>1</x></global>\n",                               # no <ossec_config>
        ]
        for text in broken:
            self.assertEqual(self.code(self.run_("files.put", text, path=path, overwrite="true")), 703, text[:60])
        with open(self.home.path(path), "rb") as f:
            self.assertEqual(f.read(), OSSEC_CONF)  # untouched
        self.assertEqual(self.code(self.run_("files.delete", path=path)), 704)
        configuration = self.successResultOf(self.run_("configuration"))
        self.assertEqual(configuration["global"], {"jsonout_output": "yes", "email_notification": "no"})
        self.assertEqual(configuration["cluster"]["nodes"], {"node": "127.0.0.1"})
        self.assertEqual(len(configuration["localfile"]), 2)
        self.assertEqual(self.successResultOf(self.run_("configuration", section="cluster", field="port")), "1516")
        self.assertEqual(self.code(self.run_("configuration", section="nothing")), 1102)
        self.assertEqual(self.code(self.run_("configuration", section="cluster", field="nothing")), 1103)
        self.assertEqual(self.code(self.run_("configuration", field="port")), 604)

    def test_rulesetIsReadOnly(self) -> None:
        with open(self.home.path("ruleset/rules/0010-rules_config.xml"), "w") as f:
            f.write("<group name='syslog,'><rule id='1' level='0'/></group>\n")
        path = "ruleset/rules/0010-rules_config.xml"
        self.assertIn("syslog", self.successResultOf(self.run_("files.get", path=path)))
        self.assertEqual(self.code(self.run_("files.put", b"<a/>", path=path, overwrite="true")), 704)
        self.assertEqual(self.code(self.run_("files.delete", path=path)), 704)

    def test_validation(self) -> None:
        os.makedirs(self.home.path("etc/rules"))
        with open(self.home.path("etc/rules/bad.xml"), "w") as f:
            f.write("<group><rule></group>\n")
        self.assertEqual(self.successResultOf(self.run_("files.get", path="etc/rules/bad.xml")), "<group><rule></group>\n")
        failure = self.failureResultOf(self.run_("files.get", path="etc/rules/bad.xml", validation="true"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (1113, 200))

    def test_logs(self) -> None:
        self.assertEqual(self.successResultOf(self.run_("logs")), {"totalItems": 0, "items": []})
        self.assertEqual(self.successResultOf(self.run_("logs.summary")), {})
        with open(self.home.path("logs/ossec.log"), "w") as f:
            f.write(LOG)
        logs = self.successResultOf(self.run_("logs"))
        self.assertEqual(logs["totalItems"], 4)
        self.assertEqual(logs["items"][0], {  # newest first
            "timestamp": "2020-06-01 10:00:03", "tag": "ossec-analysisd", "level": "warning",
            "description": "Again.\ngarbage without a date at the start? no: after an entry it continues it",
        })
        self.assertEqual(logs["items"][2]["description"], "(1206): Unable to bind.\n  a continuation line")
        self.assertEqual(logs["items"][2]["tag"], "ossec-remoted")
        self.assertEqual(logs["items"][1]["tag"], "wazuh-modulesd:syscollector")
        level = lambda **a: [e["timestamp"][-2:] for e in self.successResultOf(self.run_("logs", **a))["items"]]  # noqa: E731
        self.assertEqual(level(type_log="warning"), ["03", "02"])
        self.assertEqual(level(category="ossec-analysisd"), ["03", "00"])
        self.assertEqual(level(list={"q": "level=error,tag~modulesd", "sort": "timestamp"}), ["01", "02"])
        self.assertEqual(level(list={"search": "bind", "limit": "1"}), ["01"])
        summary = self.successResultOf(self.run_("logs.summary"))
        self.assertEqual(summary["ossec-analysisd"], {"all": 2, "info": 1, "error": 0, "warning": 1, "critical": 0, "debug": 0})

    def test_stats(self) -> None:
        self.assertEqual(self.code(self.run_("stats", date="20200601")), 1308)
        self.assertEqual(self.code(self.run_("stats", date="20201301")), 1307)
        os.makedirs(self.home.path("stats/totals/2020/Jun"))
        with open(self.home.path("stats/totals/2020/Jun/ossec-totals-01.log"), "w") as f:
            f.write("0-1002-2-4\n0-5501-3-1\n0--5--120--2--0\n1--0--80--0--0\n")
        self.assertEqual(self.successResultOf(self.run_("stats", date="20200601")), [
            {"hour": 0, "alerts": [{"sigid": 1002, "level": 2, "times": 4}, {"sigid": 5501, "level": 3, "times": 1}],
             "totalAlerts": 5, "events": 120, "syscheck": 2, "firewall": 0},
            {"hour": 1, "alerts": [], "totalAlerts": 0, "events": 80, "syscheck": 0, "firewall": 0},
        ])
        with open(self.home.path("stats/totals/2020/Jun/ossec-totals-01.log"), "a") as f:
            f.write("what\n")
        self.assertEqual(self.code(self.run_("stats", date="20200601")), 1309)
        os.makedirs(self.home.path("stats/hourly-average"))
        for hour in range(24):
            with open(self.home.path(f"stats/hourly-average/{hour}"), "w") as f:
                f.write(str(hour * 2))
        with open(self.home.path("stats/hourly-average/24"), "w") as f:
            f.write("7")
        os.unlink(self.home.path("stats/hourly-average/3"))  # a missing hour is 0
        hourly = self.successResultOf(self.run_("stats.hourly"))
        self.assertEqual(hourly, {"averages": [0 if h == 3 else h * 2 for h in range(24)], "interactions": 7})
        os.makedirs(self.home.path("stats/weekly-average/1"))
        with open(self.home.path("stats/weekly-average/1/5"), "w") as f:
            f.write("12")
        with open(self.home.path("stats/weekly-average/1/24"), "w") as f:
            f.write("2")
        weekly = self.successResultOf(self.run_("stats.weekly"))
        self.assertEqual(list(weekly), ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"])
        self.assertEqual(weekly["Sun"], {"hours": [0] * 24, "interactions": 0})
        self.assertEqual(weekly["Mon"], {"hours": [12 if h == 5 else 0 for h in range(24)], "interactions": 2})

    def test_statusAndInfo(self) -> None:
        status = self.successResultOf(self.run_("status"))
        self.assertEqual(status["wazuh-clusterd"], "running")
        self.assertEqual(status["ossec-analysisd"], "stopped")
        with open(self.home.path(f"var/run/ossec-analysisd-{os.getpid()}.pid"), "w") as f:
            f.write(str(os.getpid()))
        self.assertEqual(self.successResultOf(self.run_("status"))["ossec-analysisd"], "running")
        with open(self.home.path("etc/ossec-init.conf"), "w") as f:
            f.write('DIRECTORY="/var/ossec"\nVERSION="v3.13.1"\nDATE="Tue Jun 30 10:00:00 UTC 2020"\nTYPE="server"\n')
        info = self.successResultOf(self.run_("info"))
        self.assertEqual(
            {k: info[k] for k in ("path", "version", "type", "node", "node_type")},
            {"path": "/var/ossec", "version": "v3.13.1", "type": "server", "node": "master", "node_type": "master"},
        )


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
                raise ApiError(3022, name)
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
        failure = self.failureResultOf(self.call("node02", "files.get", path="etc/internal_options.conf"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (704, 400))
        failure = self.failureResultOf(self.call("node02", "files.get", path="etc/client.keys"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (704, 400))
        failure = self.failureResultOf(self.call("node02", "files.get", path="etc/rules/none.xml"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (1005, 200))
        failure = self.failureResultOf(self.call("node09", "info"), ApiError)
        self.assertEqual((failure.value.code, failure.value.status), (3022, 200))
