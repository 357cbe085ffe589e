"""
Read the cluster's cycle timings from ``HOME/etc/local_internal_options.conf``.

Wazuh keeps tuning knobs that operators rarely touch in "internal options":
C{daemon.option=value} lines shared by all its daemons.  The cluster's
keep-alive, retry and synchronisation periods live there under C{cluster.}
(and the log level under C{wazuh_clusterd.debug}), so that a test or a busy
site can change them without editing ``ossec.conf``; the limits of the
cluster port, the log's rotation and the metrics port live there too
(docs/operations.md, docs/metrics.md).  Options of other
daemons are left alone; a mistyped cluster option is an error, because a
silently ignored timing is worse than a refusal to start.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable

from attrs import evolve, frozen

from wazuhcluster.config import ConfigError, read_config_text

__all__ = [
    "InternalOptions",
    "InternalOptionsError",
    "load_internal_options",
    "parse_internal_options",
]


class InternalOptionsError(ConfigError):
    """
    A problem in the internal options file.

    C{str(err)} is one line, C{FILE:LINE: ...}, naming the option and the fix.
    """


@frozen
class InternalOptions:
    """
    The cluster's cycle timings, in seconds, and its debug level; the limits
    of the cluster port, the log's rotation, and where metrics are served.

    The timings' defaults are Wazuh's.  Fractions of a second are allowed so
    that tests can run the cycles quickly.
    """

    keep_alive: float = 60.0
    max_failed_keepalive_attempts: int = 2
    connection_retry: float = 10.0
    check_worker_lastkeepalive: float = 60.0
    max_allowed_time_without_keepalive: float = 120.0
    handshake_timeout: float = 10.0
    recalculate_integrity: float = 8.0
    sync_integrity: float = 9.0
    sync_agent_info: float = 10.0
    timeout_receiving_file: float = 120.0
    agent_disconnection_time: float = 600.0
    debug: int = 0
    #: Connections that have not proved the cluster key yet, in all and from
    #: one source address (see docs/operations.md, "Cluster port limits").
    max_unauthenticated_connections: int = 256
    max_unauthenticated_per_address: int = 16
    #: Most workers joined at once.
    max_workers: int = 256
    #: The workers allowed to join, by name, each optionally pinned to the
    #: SHA-256 fingerprint of its certificate (lowercase hex, or ""); empty:
    #: any name.
    allowed_workers: tuple[tuple[str, str], ...] = ()
    #: How far ahead of the master's clock an agent status may be dated.
    agent_info_max_skew: float = 60.0
    #: cluster.log is rotated when it reaches this many bytes; this many
    #: rotated files (cluster.log.1, ...) are kept.
    log_rotate_bytes: int = 10 * 1024 * 1024
    log_rotated_files: int = 5
    #: Where the node serves its Prometheus metrics (docs/metrics.md); port 0: off.
    metrics_port: int = 0
    metrics_bind: str = "127.0.0.1"


_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_WHOLE = re.compile(r"[0-9]+")


def _seconds(value: str) -> float:
    """A duration: a decimal number of seconds, more than zero."""
    if _DECIMAL.fullmatch(value):
        seconds = float(value)
        if seconds > 0 and math.isfinite(seconds):
            return seconds
    raise ValueError("must be a number of seconds greater than 0, such as 10 or 0.5")


def _attempts(value: str) -> int:
    """A count (of attempts, connections, files): a whole number, at least 1."""
    if _WHOLE.fullmatch(value) and int(value) >= 1:
        return int(value)
    raise ValueError("must be a whole number of at least 1")


def _bytes(value: str) -> int:
    """A size in bytes: a whole number, at least 4096."""
    if _WHOLE.fullmatch(value) and int(value) >= 4096:
        return int(value)
    raise ValueError("must be a whole number of bytes of at least 4096, such as 10485760")


_WORKER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FINGERPRINT = re.compile(r"(?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{64}")


def _allowed_workers(value: str) -> tuple[tuple[str, str], ...]:
    """
    Worker names separated by commas or spaces, each optionally followed by
    C{@} and the SHA-256 fingerprint of its certificate (64 hex digits,
    colons between pairs allowed): C{node02, node03@AB:CD:...}.
    """
    entries: dict[str, str] = {}
    for entry in re.split(r"[,\s]+", value.strip()):
        if not entry:
            continue
        name, _, pinned = entry.partition("@")
        if not _WORKER_NAME.fullmatch(name):
            raise ValueError(
                f"{entry[:80]!r} is not a worker name (letters, digits, -, _ and ., at most 64),"
                " optionally followed by @ and a SHA-256 certificate fingerprint"
            )
        if pinned and not _FINGERPRINT.fullmatch(pinned):
            raise ValueError(
                f"the fingerprint of {name} is not a SHA-256 fingerprint (64 hex digits,"
                " as `openssl x509 -noout -fingerprint -sha256` prints it)"
            )
        entries[name] = pinned.replace(":", "").lower()
    if not entries:
        raise ValueError("must name at least one worker, such as node02,node03")
    return tuple(sorted(entries.items()))


def _port(value: str) -> int:
    """A TCP port, or 0 for none."""
    if _WHOLE.fullmatch(value) and int(value) <= 65535:
        return int(value)
    raise ValueError("must be a port number from 1 to 65535, or 0 to turn it off")


def _address(value: str) -> str:
    """An IPv4 or IPv6 address to listen on."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IP address to listen on, such as 127.0.0.1 or 0.0.0.0") from None


def _debug_level(value: str) -> int:
    """Wazuh's debug level: 0, 1 or 2."""
    if _WHOLE.fullmatch(value) and int(value) <= 2:
        return int(value)
    raise ValueError("must be 0, 1 or 2")


_SECONDS_FIELDS = (
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
    "agent_info_max_skew",
)

#: Options that are whole numbers of at least 1.
_COUNT_FIELDS = (
    "max_failed_keepalive_attempts",
    "max_unauthenticated_connections",
    "max_unauthenticated_per_address",
    "max_workers",
    "log_rotated_files",
)

#: Option name in the file -> (field of InternalOptions, value parser).
OPTIONS: dict[str, tuple[str, Callable[[str], object]]] = {
    **{f"cluster.{name}": (name, _seconds) for name in _SECONDS_FIELDS},
    **{f"cluster.{name}": (name, _attempts) for name in _COUNT_FIELDS},
    "cluster.log_rotate_bytes": ("log_rotate_bytes", _bytes),
    "cluster.allowed_workers": ("allowed_workers", _allowed_workers),
    "cluster.metrics_port": ("metrics_port", _port),
    "cluster.metrics_bind": ("metrics_bind", _address),
    "wazuh_clusterd.debug": ("debug", _debug_level),
}


def load_internal_options(path: str) -> InternalOptions:
    """
    Read the internal options file at C{path}.

    A missing file means Wazuh's defaults, as in Wazuh, where the local file
    is optional; any other problem raises L{InternalOptionsError}.
    """
    text = read_config_text(path, "internal options file", InternalOptionsError, missing_ok=True)
    if text is None:
        return InternalOptions()
    return parse_internal_options(text, path)


def parse_internal_options(text: str, source: str) -> InternalOptions:
    """
    Parse internal options text; C{source} is the file name used in messages.

    Lines are C{daemon.option=value}, with optional spaces around C{=}; C{#}
    starts a comment.  When an option is given twice the last one wins, as in
    Wazuh.
    """
    values: dict[str, object] = {}
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        where = f"{source}:{number}"
        if "=" not in content:
            raise InternalOptionsError(
                f"{where}: {_show(content)} is not an option line; write "
                f"daemon.option=value, or start the line with # to comment it"
            )
        name, value = (part.strip() for part in content.split("=", 1))
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+", name):
            raise InternalOptionsError(
                f"{where}: {_show(name)} is not an option name; write "
                f"daemon.option=value, e.g. cluster.keep_alive=60"
            )
        if name not in OPTIONS:
            if name.startswith("cluster."):
                raise InternalOptionsError(
                    f"{where}: {name} is not a cluster option; {_suggest(name)}"
                )
            # Another daemon's option: not ours to check.
            continue
        field_name, parse = OPTIONS[name]
        try:
            values[field_name] = parse(value)
        except ValueError as e:
            raise InternalOptionsError(
                f"{where}: {name} is {_show(value)}, but {e}"
            ) from None
    return evolve(InternalOptions(), **values)


def _show(value: str) -> str:
    """Quote a value from the file for a one-line message, shortened if long."""
    if len(value) > 60:
        value = value[:57] + "..."
    return repr(value)


def _suggest(name: str) -> str:
    """How to fix an unknown cluster option: the closest known name, or all."""
    known = [option for option in OPTIONS if option.startswith("cluster.")]
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]}?"
    return "the cluster options are " + ", ".join(known)
