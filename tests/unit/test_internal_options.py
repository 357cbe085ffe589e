"""
Tests for L{wazuhcluster.internal_options}: cycle timings from
``local_internal_options.conf``.

Files are written for real into C{self.mktemp()} folders.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import attrs
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.config import ConfigError
from wazuhcluster.internal_options import (
    InternalOptions,
    InternalOptionsError,
    load_internal_options,
    parse_internal_options,
)

SECONDS_FIELDS = (
    "keep_alive",
    "connection_retry",
    "check_worker_lastkeepalive",
    "max_allowed_time_without_keepalive",
    "handshake_timeout",
    "recalculate_integrity",
    "sync_integrity",
    "sync_agent_info",
    "timeout_receiving_file",
    "agent_disconnection_time",
)

# A local_internal_options.conf as an operator keeps it: Wazuh's header, other
# daemons' options, and fast cluster cycles for a test bench.
REALISTIC = textwrap.dedent(
    """\
    # local_internal_options.conf
    #
    # This file should be handled with care. It contains
    # run time modifications that can affect the use
    # of OSSEC. Only change it if you know what you
    # are doing. Look first at ossec.conf
    # for most of the things you want to change.
    #
    # This file will not be overwritten during upgrades.

    analysisd.debug=2
    remoted.recv_timeout=1
    wazuh_modules.debug = 1

    # Fast cycles for the test bench.
    cluster.keep_alive = 0.5
    cluster.max_failed_keepalive_attempts=3   # three strikes
    cluster.recalculate_integrity= 0.25
    wazuh_clusterd.debug=2
    """
)


class InternalOptionsTestCase(SynchronousTestCase):
    """Helpers to write internal options files and check what loading says."""

    def write(self, text: str) -> str:
        """Write C{text} into a new folder and return the file's path."""
        folder = self.mktemp()
        os.mkdir(folder)
        # Under pytest, mktemp() is relative to the project folder: clean up.
        self.addCleanup(shutil.rmtree, os.path.dirname(folder))
        path = os.path.join(folder, "local_internal_options.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str) -> InternalOptions:
        """Write C{text} as a file and load it."""
        return load_internal_options(self.write(text))

    def assertOptionsError(self, text: str, line: int, *fragments: str) -> str:
        """
        Loading C{text} fails with a one-line message starting C{FILE:LINE: }
        and containing every fragment; return the message.
        """
        path = self.write(text)
        error = self.assertRaises(InternalOptionsError, load_internal_options, path)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(
            message.startswith(f"{path}:{line}: "),
            f"{message!r} does not start with {path}:{line}: ",
        )
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class DefaultsTests(InternalOptionsTestCase):
    """Without settings, Wazuh's timings."""

    def test_defaults(self) -> None:
        """The defaults are the documented ones."""
        self.assertEqual(
            attrs.asdict(InternalOptions()),
            {
                "keep_alive": 60,
                "max_failed_keepalive_attempts": 2,
                "connection_retry": 10,
                "check_worker_lastkeepalive": 60,
                "max_allowed_time_without_keepalive": 120,
                "handshake_timeout": 10,
                "recalculate_integrity": 8,
                "sync_integrity": 9,
                "sync_agent_info": 10,
                "timeout_receiving_file": 120,
                "agent_disconnection_time": 600,
                "debug": 0,
                "max_unauthenticated_connections": 256,
                "max_unauthenticated_per_address": 16,
                "max_workers": 256,
                "allowed_workers": (),
                "agent_info_max_skew": 60,
                "log_rotate_bytes": 10485760,
                "log_rotated_files": 5,
                "metrics_port": 0,
                "metrics_bind": "127.0.0.1",
            },
        )

    def test_missing_file(self) -> None:
        """A missing file (the usual case) means the defaults."""
        path = os.path.join(self.mktemp(), "local_internal_options.conf")
        self.assertEqual(load_internal_options(path), InternalOptions())

    def test_empty_file(self) -> None:
        """An empty file, or one of comments, means the defaults."""
        self.assertEqual(self.load(""), InternalOptions())
        self.assertEqual(self.load("# nothing\n\n   \n  # here\n"), InternalOptions())


class ReadingTests(InternalOptionsTestCase):
    """The file format, as Wazuh reads it."""

    def test_realistic_file(self) -> None:
        """
        Comments, blank lines, other daemons' options, spaces around C{=}
        and trailing comments are all handled.
        """
        self.assertEqual(
            self.load(REALISTIC),
            InternalOptions(
                keep_alive=0.5,
                max_failed_keepalive_attempts=3,
                recalculate_integrity=0.25,
                debug=2,
            ),
        )

    def test_every_seconds_option(self) -> None:
        """Every C{cluster.} timing sets its own field."""
        text = "".join(
            f"cluster.{name} = {index + 1}.5\n" for index, name in enumerate(SECONDS_FIELDS)
        )
        options = self.load(text)
        for index, name in enumerate(SECONDS_FIELDS):
            self.assertEqual(getattr(options, name), index + 1.5, name)

    def test_seconds_formats(self) -> None:
        """Whole numbers and fractions, with or without a leading digit."""
        for value, expected in (("10", 10.0), ("0.5", 0.5), (".25", 0.25), ("2.", 2.0), ("007", 7.0)):
            options = self.load(f"cluster.sync_integrity={value}\n")
            self.assertEqual(options.sync_integrity, expected)
            self.assertIsInstance(options.sync_integrity, float)

    def test_whole_number_options(self) -> None:
        """The attempts count and the debug level are integers."""
        options = self.load("cluster.max_failed_keepalive_attempts=1\nwazuh_clusterd.debug=0\n")
        self.assertEqual((options.max_failed_keepalive_attempts, options.debug), (1, 0))
        self.assertIsInstance(options.max_failed_keepalive_attempts, int)
        for level in (0, 1, 2):
            self.assertEqual(self.load(f"wazuh_clusterd.debug={level}").debug, level)

    def test_last_one_wins(self) -> None:
        """An option given twice takes its last value, as in Wazuh."""
        options = self.load("cluster.keep_alive=5\ncluster.keep_alive=7\n")
        self.assertEqual(options.keep_alive, 7.0)

    def test_other_daemons_ignored(self) -> None:
        """Other daemons' options are not checked, whatever their values."""
        text = "analysisd.debug=verbose\nremoted.recv_timeout=\nwazuh_clusterd.other=x\n"
        self.assertEqual(self.load(text), InternalOptions())

    def test_windows_line_endings(self) -> None:
        """CRLF line endings are read as lines."""
        path = self.write("")
        with open(path, "wb") as f:
            f.write(b"# x\r\ncluster.keep_alive=3\r\nwazuh_clusterd.debug=1\r\n")
        options = load_internal_options(path)
        self.assertEqual((options.keep_alive, options.debug), (3.0, 1))

    def test_parse_uses_source(self) -> None:
        """L{parse_internal_options} reads text and names C{source} in messages."""
        self.assertEqual(
            parse_internal_options("cluster.sync_agent_info=4", "x.conf").sync_agent_info, 4.0
        )
        error = self.assertRaises(
            InternalOptionsError, parse_internal_options, "\ncluster.sync_agent_info=0", "x.conf"
        )
        self.assertTrue(str(error).startswith("x.conf:2: "), str(error))


class ClusterPortOptionsTests(InternalOptionsTestCase):
    """The limits of the cluster port, the allow-list of workers and log rotation."""

    def test_counts_and_sizes(self) -> None:
        options = self.load(
            "cluster.max_unauthenticated_connections=64\n"
            "cluster.max_unauthenticated_per_address=4\n"
            "cluster.max_workers=10\n"
            "cluster.agent_info_max_skew=5\n"
            "cluster.log_rotate_bytes=4096\n"
            "cluster.log_rotated_files=2\n"
        )
        self.assertEqual(
            (
                options.max_unauthenticated_connections, options.max_unauthenticated_per_address,
                options.max_workers, options.agent_info_max_skew, options.log_rotate_bytes,
                options.log_rotated_files,
            ),
            (64, 4, 10, 5.0, 4096, 2),
        )

    def test_allowed_workers(self) -> None:
        """Names by commas or spaces, each optionally pinned to a fingerprint (colons or not)."""
        pinned = ":".join(["AB"] * 32)
        options = self.load(f"cluster.allowed_workers = node02, node03@{pinned}  node04@{'cd' * 32}\n")
        self.assertEqual(
            options.allowed_workers,
            (("node02", ""), ("node03", "ab" * 32), ("node04", "cd" * 32)),
        )

    def test_bad_allowed_workers(self) -> None:
        for value, fragment in (
            ("", "at least one worker"),
            ("node/02", "is not a worker name"),
            ("node02@abcd", "is not a SHA-256 fingerprint"),
        ):
            self.assertOptionsError(f"cluster.allowed_workers={value}", 1, "cluster.allowed_workers is", fragment)

    def test_bad_sizes(self) -> None:
        self.assertOptionsError("cluster.log_rotate_bytes=100", 1, "at least 4096")
        self.assertOptionsError("cluster.max_workers=0", 1, "whole number of at least 1")


class MetricsOptionsTests(InternalOptionsTestCase):
    """Where the node serves its Prometheus metrics (docs/metrics.md)."""

    def test_port_and_address(self) -> None:
        options = self.load("cluster.metrics_port = 9101\ncluster.metrics_bind = ::1\n")
        self.assertEqual((options.metrics_port, options.metrics_bind), (9101, "::1"))
        self.assertEqual(self.load("cluster.metrics_port=0\n").metrics_port, 0)

    def test_bad_port(self) -> None:
        for value in ("65536", "-1", "http", "9101.5"):
            self.assertOptionsError(f"cluster.metrics_port={value}", 1, "cluster.metrics_port is", "port number")

    def test_bad_address(self) -> None:
        for value in ("localhost", "10.0.0.300", "", "0.0.0.0:9101"):
            self.assertOptionsError(
                f"cluster.metrics_bind={value}", 1, "cluster.metrics_bind is", "must be an IP address"
            )


class ErrorTests(InternalOptionsTestCase):
    """Mistakes are refused with the file and the line."""

    def test_error_is_a_config_error(self) -> None:
        """Callers catching L{ConfigError} also catch these."""
        self.assertTrue(issubclass(InternalOptionsError, ConfigError))

    def test_bad_seconds(self) -> None:
        """Zero, negative, non-numeric, infinite and unit-suffixed durations are refused."""
        for value in ("0", "0.0", "-1", "abc", "10s", "1e3", "inf", "nan", "", "1,5", "9" * 400):
            self.assertOptionsError(
                f"# fast\n\ncluster.keep_alive = {value}\n",
                3,
                "cluster.keep_alive is ",
                "number of seconds greater than 0",
            )

    def test_bad_attempts(self) -> None:
        """The attempts count is a whole number of at least one."""
        for value in ("0", "1.5", "-2", "two", ""):
            self.assertOptionsError(
                f"cluster.max_failed_keepalive_attempts={value}",
                1,
                f"cluster.max_failed_keepalive_attempts is {value!r}",
                "whole number of at least 1",
            )

    def test_bad_debug(self) -> None:
        """The debug level is 0, 1 or 2."""
        for value in ("3", "-1", "1.0", "yes"):
            self.assertOptionsError(
                f"wazuh_clusterd.debug={value}",
                1,
                f"wazuh_clusterd.debug is {value!r}",
                "must be 0, 1 or 2",
            )

    def test_unknown_cluster_option(self) -> None:
        """A mistyped cluster option is refused, suggesting the right name."""
        self.assertOptionsError(
            "cluster.keep_alive=5\ncluster.keepalive=5\n",
            2,
            "cluster.keepalive is not a cluster option",
            "did you mean cluster.keep_alive?",
        )

    def test_unknown_cluster_option_lists_options(self) -> None:
        """With nothing close, the message lists the cluster options."""
        message = self.assertOptionsError(
            "cluster.zzz=1", 1, "cluster.zzz is not a cluster option"
        )
        for name in SECONDS_FIELDS:
            self.assertIn(f"cluster.{name}", message)

    def test_line_without_equals(self) -> None:
        """A line that is not C{name=value} is refused with its number."""
        self.assertOptionsError(
            "# header\n\ncluster.keep_alive=5\ncluster.keep_alive 5\n",
            4,
            "'cluster.keep_alive 5' is not an option line",
        )

    def test_bad_option_name(self) -> None:
        """A name that is not C{daemon.option} is refused."""
        for line in ("=5", "keep_alive=5", "cluster.=5", "a b.c=1"):
            self.assertOptionsError(line, 1, "is not an option name")

    def test_folder_instead_of_file(self) -> None:
        """A folder is not an options file."""
        folder = os.path.dirname(self.write(""))
        error = self.assertRaises(InternalOptionsError, load_internal_options, folder)
        self.assertTrue(str(error).startswith(f"{folder}: cannot read"), str(error))

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are reported with their line."""
        path = self.write("")
        with open(path, "wb") as f:
            f.write(b"# ok\n# caf\xe9\n")
        error = self.assertRaises(InternalOptionsError, load_internal_options, path)
        self.assertEqual(
            str(error), f"{path}:2: the internal options file is not UTF-8 text; save it as UTF-8"
        )
