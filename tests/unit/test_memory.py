"""Tests for L{wazuhcluster.memory}: giving freed memory back to the system."""

from __future__ import annotations

import platform
import sys
import threading

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster import memory


class ReleaseFreeMemoryTests(SynchronousTestCase):
    def test_where_glibc_is(self) -> None:
        """On Linux with glibc the trim runs; elsewhere nothing is done, and nothing fails."""
        glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
        self.assertEqual(memory.releaseFreeMemory(), glibc)

    def test_without_malloc_trim(self) -> None:
        self.patch(memory, "_trim", None)
        self.assertFalse(memory.releaseFreeMemory())

    def test_one_trim_at_a_time(self) -> None:
        """A call while another trims does not wait for it, nor trim again."""
        calls: list[int] = []
        self.patch(memory, "_trim", calls.append)
        lock = threading.Lock()
        self.patch(memory, "_lock", lock)
        with lock:
            self.assertTrue(memory.releaseFreeMemory())
        self.assertEqual(calls, [])
        self.assertTrue(memory.releaseFreeMemory())
        self.assertEqual(calls, [0])
