"""Reading the agent IDs of a client.keys."""

import os

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents.clientkeys import knownAgentIDs

KEY = "a" * 64


class KnownAgentsTests(SynchronousTestCase):
    def test_realFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(
                f"001 web-01 10.0.0.5 {KEY}\n"
                "\n"
                f"# 002 commented 10.0.0.6 {KEY}\n"
                f"003 !removed any {KEY}\n"
                f"1024 db.prod 10.1.0.0/16 {KEY}\n"
                f"000 manager any {KEY}\n"
                "garbage line\n"
                f"abc bad-id any {KEY}\n"
            )
        self.assertEqual(knownAgentIDs(path), {"001", "1024"})

    def test_missingFile(self) -> None:
        self.assertEqual(knownAgentIDs(os.path.abspath(self.mktemp())), frozenset())


from wazuhcluster.agents.clientkeys import (  # noqa: E402
    AgentKey,
    LineKind,
    ipsCollide,
    parseClientKeys,
    readClientKeys,
)

OTHER = "0123456789abcdef" * 4

#: A client.keys as found on a real manager, with hand edits and mistakes.
REALISTIC = (
    b"# Agents of the Madrid office\n"
    + f"001 web-01 10.0.0.5 {KEY}\n".encode()
    + b"\n"
    + f"002 !old_db 10.0.0.6 {KEY}\n".encode()
    + b"   \n"
    + f"003 v6.host 2001:db8::1 {OTHER}\n".encode()
    + f"004 branch 192.168.0.0/24 {OTHER}\n".encode()
    + b"garbage line\n"
    + f"1000 roaming any {KEY}\n".encode()
    + f"000 manager any {KEY}\n".encode()
    + f"005 bad/name any {KEY}\n".encode()
    + f"006 badip 300.1.1.1 {KEY}\n".encode()
    + b"007 shortkey any abc\n"
    + f"001 twin any {KEY}\n".encode()
    + b"\xff\xfe not text\n"
    + f"1500 !gone any {KEY}\r\n".encode()
    + f"008 last any {KEY}"
    .encode()
)


class ParseTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        keys = parseClientKeys(REALISTIC, "keys")
        self.assertEqual(
            [line.kind for line in keys.lines],
            [LineKind.COMMENT, LineKind.AGENT, LineKind.BLANK, LineKind.REMOVED, LineKind.BLANK]
            + [LineKind.AGENT] * 2 + [LineKind.MALFORMED, LineKind.AGENT]
            + [LineKind.MALFORMED] * 6 + [LineKind.REMOVED, LineKind.AGENT],
        )

    def test_agents(self) -> None:
        keys = parseClientKeys(REALISTIC)
        self.assertEqual(
            keys.agents,
            (
                AgentKey("001", "web-01", "10.0.0.5", KEY),
                AgentKey("003", "v6.host", "2001:db8::1", OTHER),
                AgentKey("004", "branch", "192.168.0.0/24", OTHER),
                AgentKey("1000", "roaming", "any", KEY),
                AgentKey("008", "last", "any", KEY),
            ),
        )
        self.assertEqual(
            keys.removedAgents,
            (AgentKey("002", "old_db", "10.0.0.6", KEY), AgentKey("1500", "gone", "any", KEY)),
        )

    def test_warningsNameTheLines(self) -> None:
        warnings = parseClientKeys(REALISTIC, "etc/client.keys").warnings
        self.assertEqual(
            [w.split(": ")[0] for w in warnings],
            [f"etc/client.keys:{n}" for n in (8, 10, 11, 12, 13, 14, 15)],
        )
        self.assertIn("reserved for the manager", warnings[1])
        self.assertIn("'bad/name'", warnings[2])
        self.assertIn("'300.1.1.1'", warnings[3])
        self.assertIn("64 hexadecimal", warnings[4])
        self.assertIn("already given to the agent of line 2", warnings[5])
        self.assertIn("UTF-8", warnings[6])

    def test_nextIDAboveRemovedAndMalformed(self) -> None:
        """IDs are never reused, even those of removed or broken lines."""
        self.assertEqual(parseClientKeys(REALISTIC).nextID(), "1501")
        self.assertEqual(parseClientKeys(f"041 x any {KEY}\n099 y\n".encode()).nextID(), "100")
        self.assertEqual(parseClientKeys(b"").nextID(), "001")

    def test_roundTripByteForByte(self) -> None:
        self.assertEqual(parseClientKeys(REALISTIC).serialise(), REALISTIC)

    def test_changesTouchOnlyTheirLines(self) -> None:
        """Adding and removing rewrite only the agents' lines, and end the last line first."""
        keys = parseClientKeys(REALISTIC).withoutAgent("003").withAgent(AgentKey("1501", "new", "any", OTHER))
        expected = (
            REALISTIC.replace(b"003 v6.host", b"003 !v6.host")
            + b"\n"
            + f"1501 new any {OTHER}\n".encode()
        )
        self.assertEqual(keys.serialise(), expected)
        self.assertEqual(parseClientKeys(expected).agent("1501"), AgentKey("1501", "new", "any", OTHER))
        self.assertIsNone(keys.agent("003"))

    def test_removeUnknown(self) -> None:
        self.assertRaises(KeyError, parseClientKeys(REALISTIC).withoutAgent, "002")

    def test_readMissing(self) -> None:
        self.assertEqual(readClientKeys(os.path.abspath(self.mktemp())).agents, ())

    def test_exported(self) -> None:
        import base64

        agent = AgentKey("001", "web", "any", KEY)
        self.assertEqual(base64.b64decode(agent.exported()), f"001 web any {KEY}".encode())


class CollisionTests(SynchronousTestCase):
    def test_any(self) -> None:
        self.assertFalse(ipsCollide("any", "any"))

    def test_addresses(self) -> None:
        self.assertTrue(ipsCollide("10.0.0.1", "10.0.0.1"))
        self.assertTrue(ipsCollide("2001:db8::1", "2001:0db8:0::1"))
        self.assertFalse(ipsCollide("10.0.0.1", "10.0.0.2"))

    def test_networks(self) -> None:
        self.assertTrue(ipsCollide("10.0.0.0/8", "10.0.0.0/8"))
        self.assertFalse(ipsCollide("10.0.0.0/8", "10.0.0.0/16"))
        self.assertFalse(ipsCollide("10.0.0.0/8", "10.0.0.1"))
        self.assertFalse(ipsCollide("10.0.0.1", "10.0.0.0/8"))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_pieces = st.sampled_from(
    [b"\n", b"\r\n", b" ", b"#", b"!", b"001", b"1000", b"000", b"web", b"any", b"10.0.0.0/8",
     b"::1", KEY.encode(), b"\xff", b"\t"]
)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(_pieces | st.binary(max_size=8), max_size=40).map(b"".join))
    def test_anyBytesRoundTrip(self, data: bytes) -> None:
        """Whatever the file holds, parsing and serialising gives it back."""
        keys = parseClientKeys(data)
        self.assertEqual(keys.serialise(), data)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_pieces | st.binary(max_size=8), max_size=40).map(b"".join))
    def test_addingKeepsEveryOtherLine(self, data: bytes) -> None:
        """An added agent is the only new line and is read back; the rest stays."""
        keys = parseClientKeys(data)
        agent = AgentKey(keys.nextID(), "new", "any", OTHER)
        written = keys.withAgent(agent).serialise()
        prefix = data if data.endswith(b"\n") or not data else data + b"\n"
        self.assertEqual(written, prefix + agent.line())
        self.assertEqual(parseClientKeys(written).agents[-1], agent)
        self.assertNotIn(agent.id, {a.id for a in keys.agents + keys.removedAgents})
