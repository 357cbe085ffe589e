"""
The API's settings: C{HOME/api/configuration/api.yaml}, laid out as Wazuh 4
lays it out::

    enabled: yes                 # default: yes on the master, no on a worker
    host: 127.0.0.1              # the address to listen on
    port: 55000
    https:
      enabled: no
      cert: api/configuration/ssl/server.crt   # default: the node's own certificate
      key: api/configuration/ssl/server.key
    restart_command: [bin/wazuh-control, restart]   # what PUT .../restart runs
    max_upload_size: 17825792    # largest request body, in bytes (17 MiB)
    authentication_pool_size: 2  # threads that verify passwords
    intervals:
      headers_timeout: 10        # seconds for a request's headers, all of them
      request_timeout: 60        # seconds for a whole request (headers and body)
    access:
      max_connections: 256       # API connections at once (at most the fd limit / 8)
      max_connections_per_address: 32
      max_login_attempts: 50     # failed logins from one address per block_time...
      block_time: 300            # ...seconds, then refused until the period ends
      auth_cache_time: 30        # seconds a verified user:password is trusted

No file means the defaults.  Relative paths are relative to the home.  A
bad file or value stops the node at start with a line naming the file and
the setting, as a bad C{ossec.conf} does.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import yaml
from attrs import frozen

from ..config import ConfigError
from ..home import WazuhHome

DEFAULT_PORT = 55000

_KEYS = {
    "enabled", "host", "port", "https", "restart_command", "max_upload_size",
    "authentication_pool_size", "intervals", "access",
}
_HTTPS_KEYS = {"enabled", "cert", "key"}


@frozen
class ApiLimits:
    """
    What one client may take of the API (docs/operations.md, "Limits"):
    body size, time to send a request, connections, login attempts, and how
    long a verified password is trusted.
    """

    max_upload_size: int = 17 * 1024 * 1024
    authentication_pool_size: int = 2
    headers_timeout: float = 10.0
    request_timeout: float = 60.0
    max_connections: int = 256
    max_connections_per_address: int = 32
    max_login_attempts: int = 50
    block_time: float = 300.0
    auth_cache_time: float = 30.0


#: Each limit's section in api.yaml ("" for the top level), and its bounds.
_LIMITS = {
    "max_upload_size": ("", 1024, 2**40),
    "authentication_pool_size": ("", 1, 64),
    "headers_timeout": ("intervals", 1, 3600),
    "request_timeout": ("intervals", 1, 86400),
    "max_connections": ("access", 1, 1_000_000),
    "max_connections_per_address": ("access", 1, 1_000_000),
    "max_login_attempts": ("access", 1, 1_000_000),
    "block_time": ("access", 1, 86400),
    "auth_cache_time": ("access", 0, 3600),
}


@frozen
class ApiSettings:
    enabled: bool
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    https: bool = False
    #: Absolute paths, or None for the node's own certificate and key.
    cert: str | None = None
    key: str | None = None
    restartCommand: tuple[str, ...] = ()
    limits: ApiLimits = ApiLimits()


def apiSettingsPath(home: WazuhHome) -> str:
    return home.path("api", "configuration", "api.yaml")


def loadApiSettings(home: WazuhHome, isMaster: bool) -> ApiSettings:
    """Read the API's settings of the node at C{home}; L{ConfigError} names a problem."""
    path = apiSettingsPath(home)
    defaultRestart = (home.path("bin", "wazuh-control"), "restart")
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return ApiSettings(enabled=isMaster, restartCommand=defaultRestart)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the API settings: {e.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the API settings must be a mapping of settings")

    def problem(setting: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {setting}: {why}")

    unknown = sorted(str(k) for k in document if k not in _KEYS)
    if unknown:
        raise problem(unknown[0], f"unknown setting; the settings are {', '.join(sorted(_KEYS))}")
    enabled = _boolean(document.get("enabled", isMaster), lambda why: problem("enabled", why))
    host = document.get("host", "127.0.0.1")
    if not isinstance(host, str):
        raise problem("host", "must be an IP address such as 127.0.0.1 or 0.0.0.0")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise problem("host", f"{host!r} is not an IP address (such as 127.0.0.1 or 0.0.0.0)") from None
    port = document.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise problem("port", f"{port!r} is not a port number (1 to 65535)")
    https = document.get("https") or {}
    if not isinstance(https, dict):
        raise problem("https", "must be a mapping with enabled, cert and key")
    unknown = sorted(str(k) for k in https if k not in _HTTPS_KEYS)
    if unknown:
        raise problem(f"https.{unknown[0]}", "unknown setting; the settings are enabled, cert, key")
    useHttps = _boolean(https.get("enabled", False), lambda why: problem("https.enabled", why))
    cert, key = https.get("cert"), https.get("key")
    for name, value in (("cert", cert), ("key", key)):
        if value is not None and not isinstance(value, str):
            raise problem(f"https.{name}", "must be a file path")
    if (cert is None) != (key is None):
        raise problem("https", "give both cert and key, or neither (to use the node's own certificate)")
    restart = document.get("restart_command", list(defaultRestart))
    if isinstance(restart, str):
        restart = [restart]
    if not isinstance(restart, list) or not restart or not all(isinstance(a, str) and a for a in restart):
        raise problem("restart_command", "must be a command as a list, such as [systemctl, restart, wazuh-manager]")
    restart[0] = _underHome(home, restart[0]) if "/" in restart[0] else restart[0]
    limits = _limits(document, problem)
    return ApiSettings(
        enabled=enabled, host=host, port=port, https=useHttps,
        cert=_underHome(home, cert) if cert else None,
        key=_underHome(home, key) if key else None,
        restartCommand=tuple(restart),
        limits=limits,
    )


def _limits(document: dict[str, Any], problem: Any) -> ApiLimits:
    """The limits set in C{document}, the others at their defaults."""
    sections: dict[str, dict[str, Any]] = {"": document}
    for section in ("intervals", "access"):
        value = document.get(section) or {}
        if not isinstance(value, dict):
            raise problem(section, "must be a mapping of settings")
        known = sorted(k for k, (where, _, _) in _LIMITS.items() if where == section)
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise problem(f"{section}.{unknown[0]}", f"unknown setting; the settings are {', '.join(known)}")
        sections[section] = value
    found: dict[str, Any] = {}
    for name, (section, low, high) in _LIMITS.items():
        if name not in sections[section]:
            continue
        value = sections[section][name]
        setting = f"{section}.{name}" if section else name
        default = getattr(ApiLimits(), name)
        whole = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise problem(setting, f"{value!r} is not a {'whole ' if whole else ''}number")
        if not low <= value <= high:
            raise problem(setting, f"{value!r} is out of range ({low} to {high})")
        found[name] = value
    return ApiLimits(**found)


def _underHome(home: WazuhHome, path: str) -> str:
    return path if os.path.isabs(path) else home.path(path)


def _boolean(value: Any, problem: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "no", "true", "false"):
        return value.lower() in ("yes", "true")
    raise problem(f"{value!r} is not yes or no")
