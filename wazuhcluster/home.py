"""
Where a node keeps its files: every path lies under the Wazuh home folder.

Wazuh's layout is kept so that operators find things where they expect them:
configuration in ``etc/``, the log in ``logs/``, the control socket in
``queue/cluster/`` and run-time files in ``var/run/``.
"""

from __future__ import annotations

import argparse
import os

from attrs import frozen


@frozen
class WazuhHome:
    """The Wazuh home folder of one node (``/var/ossec`` on a real manager)."""

    root: str

    @classmethod
    def forConfig(cls, configPath: str, home: str | None = None) -> "WazuhHome":
        """
        The home of the node configured by C{configPath}: C{home} if given,
        else the folder above the config file's folder
        (``/var/ossec/etc/ossec.conf`` gives ``/var/ossec``).
        """
        if home is None:
            home = os.path.dirname(os.path.dirname(os.path.abspath(configPath)))
        return cls(os.path.abspath(home))

    def path(self, *parts: str) -> str:
        """An absolute path under this home."""
        return os.path.join(self.root, *parts)

    def resolve(self, configured: str) -> str:
        """A path from the configuration: relative ones are relative to home."""
        return configured if os.path.isabs(configured) else self.path(configured)

    @property
    def ossecConf(self) -> str:
        return self.path("etc", "ossec.conf")

    @property
    def internalOptions(self) -> str:
        return self.path("etc", "local_internal_options.conf")

    @property
    def clusterLog(self) -> str:
        return self.path("logs", "cluster.log")

    @property
    def controlSocket(self) -> str:
        return self.path("queue", "cluster", "c-internal.sock")

    @property
    def nodeKey(self) -> str:
        """The node's own TLS private key, made on first start when none is configured."""
        return self.path("etc", "cluster-node.key")

    @property
    def nodeCert(self) -> str:
        """The node's own self-signed TLS certificate."""
        return self.path("etc", "cluster-node.crt")

    @property
    def pidFile(self) -> str:
        return self.path("var", "run", "wazuh-clusterd.pid")

    def makeFolders(self) -> None:
        """Create the folders the daemon writes to, as Wazuh's installer would."""
        for parts, mode in (
            (("etc",), 0o770),
            (("logs",), 0o750),
            (("queue", "cluster"), 0o770),
            (("var", "run"), 0o770),
        ):
            os.makedirs(self.path(*parts), mode=mode, exist_ok=True)


def addHomeArgument(parser: "argparse.ArgumentParser") -> None:
    """The C{--home} option every command line tool takes."""
    parser.add_argument(
        "--home",
        default=os.environ.get("WAZUH_HOME", "/var/ossec"),
        help="The node's Wazuh home folder (default: $WAZUH_HOME or /var/ossec).",
    )
