"""
cluster.log lines in Wazuh's format, and what reaches them.
"""

from __future__ import annotations

import io
import re
import time

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.logs import clusterLogObserver, criticalLine, formatWazuhEvent

LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d wazuh-clusterd: (DEBUG|INFO|WARNING|ERROR|CRITICAL): ")


class Tagged:
    logTag = "[Worker node02] [Main]"
    log = Logger(namespace="wazuhcluster.test")


class FormatTests(SynchronousTestCase):
    def test_wazuhLine(self) -> None:
        event = {
            "log_format": "Successfully connected to master {name}.",
            "name": "node01",
            "log_level": LogLevel.info,
            "log_time": time.mktime((2026, 11, 27, 10, 12, 7, 0, 0, -1)),
            "log_source": Tagged(),
        }
        self.assertEqual(
            formatWazuhEvent(event),
            "2026/11/27 10:12:07 wazuh-clusterd: INFO: [Worker node02] [Main] Successfully connected to master node01.\n",
        )

    def test_levels(self) -> None:
        for level, word in [(LogLevel.warn, "WARNING"), (LogLevel.error, "ERROR"), (LogLevel.debug, "DEBUG")]:
            line = formatWazuhEvent({"log_format": "x", "log_level": level, "log_time": 0})
            self.assertIn(f": {word}: x", line)

    def test_failureSummarised(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        line = formatWazuhEvent(
            {"log_format": "Cycle stopped", "log_level": LogLevel.error, "log_time": 0, "log_failure": failure}
        )
        self.assertIn("Cycle stopped: ZeroDivisionError: division by zero", line)
        self.assertEqual(line.count("\n"), 1)

    def test_multilineIndented(self) -> None:
        line = formatWazuhEvent({"log_format": "a\nb", "log_level": LogLevel.info, "log_time": 0})
        self.assertTrue(line.endswith("a\n    b\n"))


class ObserverTests(SynchronousTestCase):
    def emitAll(self, debug: bool) -> str:
        out = io.StringIO()
        publisher = LogPublisher(clusterLogObserver(out, debug))
        ours = Logger(namespace="wazuhcluster.master.fleet", observer=publisher)
        twisted = Logger(namespace="twisted.protocols.amp", observer=publisher)
        ours.debug("our debug")
        ours.info("our info")
        twisted.info("connection established")
        twisted.error("twisted error")
        return out.getvalue()

    def test_infoLevel(self) -> None:
        text = self.emitAll(debug=False)
        self.assertNotIn("our debug", text)
        self.assertIn("our info", text)
        self.assertNotIn("connection established", text)
        self.assertIn("twisted error", text)
        for line in text.splitlines():
            self.assertRegex(line, LINE)

    def test_debugLevel(self) -> None:
        text = self.emitAll(debug=True)
        self.assertIn("our debug", text)
        self.assertIn("connection established", text)

    def test_stdoutToo(self) -> None:
        out, stdout = io.StringIO(), io.StringIO()
        publisher = LogPublisher(clusterLogObserver(out, False, stdout))
        Logger(namespace="wazuhcluster.x", observer=publisher).info("hello")
        self.assertEqual(out.getvalue(), stdout.getvalue())
        self.assertIn("hello", out.getvalue())

    def test_criticalOnStderrInTheForeground(self) -> None:
        """
        In the foreground, a CRITICAL line (the node cannot go on) goes to
        standard error, every other line to standard output; the file has all.
        """
        out, stdout, stderr = io.StringIO(), io.StringIO(), io.StringIO()
        publisher = LogPublisher(clusterLogObserver(out, False, stdout, stderr))
        log = Logger(namespace="wazuhcluster.x", observer=publisher)
        log.info("started")
        log.error("a link broke")
        log.critical("cannot listen")
        self.assertEqual(len(out.getvalue().splitlines()), 3)
        self.assertEqual([line.split(": ", 2)[-1] for line in stdout.getvalue().splitlines()], ["started", "a link broke"])
        self.assertEqual(stderr.getvalue().splitlines(), [out.getvalue().splitlines()[2]])
        self.assertRegex(stderr.getvalue(), LINE)

    def test_criticalLine(self) -> None:
        """What the node writes itself when it stops before logging began."""
        line = criticalLine("cannot listen on 127.0.0.1:1516: Address already in use")
        self.assertRegex(line, LINE)
        self.assertTrue(line.endswith("CRITICAL: cannot listen on 127.0.0.1:1516: Address already in use\n"), line)

class ThrottleTests(SynchronousTestCase):
    """What a peer can repeat is logged at most once a minute per address and kind."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from wazuhcluster.logs import LogThrottle

        self.clock = Clock()
        self.throttle = LogThrottle(self.clock.seconds, interval=60, maxKeys=3)

    def test_onceAMinuteThenCounts(self) -> None:
        self.assertEqual(self.throttle.allow("10.0.0.2", "drop"), 0)
        for _ in range(5):
            self.assertIsNone(self.throttle.allow("10.0.0.2", "drop"))
        self.assertEqual(self.throttle.allow("10.0.0.3", "drop"), 0)
        self.assertEqual(self.throttle.allow("10.0.0.2", "other"), 0)
        self.clock.advance(60)
        self.assertEqual(self.throttle.allow("10.0.0.2", "drop"), 5)
        self.assertIsNone(self.throttle.allow("10.0.0.2", "drop"))

    def test_keysAreBounded(self) -> None:
        for i in range(10):
            self.throttle.allow(f"10.0.0.{i}", "drop")
        self.assertEqual(len(self.throttle._seen), 3)

    def test_emitSaysHowManyWereLeftOut(self) -> None:
        publisher = LogPublisher()
        events: list = []
        publisher.addObserver(events.append)
        log = Logger(namespace="wazuhcluster.test", observer=publisher)
        for _ in range(3):
            self.throttle.emit(log, LogLevel.warn, "10.0.0.2", "drop", "Dropping {peer}.", peer="10.0.0.2")
        self.clock.advance(61)
        self.throttle.emit(log, LogLevel.warn, "10.0.0.2", "drop", "Dropping {peer}.", peer="10.0.0.2")
        lines = [formatWazuhEvent(e) for e in events]
        self.assertEqual(len(lines), 2)
        self.assertIn("Dropping 10.0.0.2. (2 more like it from 10.0.0.2 were not logged in the last 60 s)", lines[1])


class RotationTests(SynchronousTestCase):
    """cluster.log is rotated by size, keeping a bounded number of old files."""

    def test_rotatedAndBounded(self) -> None:
        import os

        from wazuhcluster.logs import openLogFile

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "cluster.log")
        logFile = openLogFile(path, rotateBytes=4096, rotatedFiles=2)
        observer = clusterLogObserver(logFile, debug=False)
        log = Logger(namespace="wazuhcluster.test", observer=observer)
        for i in range(1000):
            log.warn("line {i} é {pad}", i=i, pad="x" * 80)
        logFile.close()
        self.assertEqual(sorted(os.listdir(folder)), ["cluster.log", "cluster.log.1", "cluster.log.2"])
        for name in os.listdir(folder):
            self.assertLess(os.path.getsize(os.path.join(folder, name)), 4096 + 200)
        with open(path, encoding="utf-8") as f:
            last = f.read().splitlines()[-1]
        self.assertIn("line 999 é", last)
