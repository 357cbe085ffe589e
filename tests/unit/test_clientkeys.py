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
