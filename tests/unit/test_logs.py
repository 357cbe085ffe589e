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
