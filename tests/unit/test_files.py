"""Writing files atomically: content, mode, times, and the owner kept."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.files import writeFileAtomically


class WriteFileAtomicallyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "client.keys")

    def test_contentModeTime(self) -> None:
        writeFileAtomically(self.path, b"one\n", 0o640, durable=False, mtimeNs=1_700_000_000_123_456_789)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"one\n")
        st = os.stat(self.path)
        self.assertEqual((st.st_mode & 0o777, st.st_mtime_ns), (0o640, 1_700_000_000_123_456_789))
        self.assertEqual(os.listdir(self.folder), ["client.keys"])

    def test_ownerKept(self) -> None:
        """Run as root (manage_agents by an operator), the file keeps its owner and group."""
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a file to another user")
        writeFileAtomically(self.path, b"one\n")
        os.chown(self.path, 65534, 65534)
        writeFileAtomically(self.path, b"two\n")
        st = os.stat(self.path)
        self.assertEqual((st.st_uid, st.st_gid), (65534, 65534))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"two\n")
