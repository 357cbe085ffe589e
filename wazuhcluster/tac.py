"""
What the ready-made C{tac/master.tac} and C{tac/worker.tac} files run: the
same node service as C{twistd wazuhcluster}, in an application object.
"""

from __future__ import annotations

import os
import sys

from twisted.application.service import Application

from .config import ConfigError, NoClusterSection, load_cluster_config
from .tap import notConfigured, nodeService


def nodeApplication(configPath: str, home: str, expectedType: str) -> Application:
    """
    The twistd application of the node configured by C{configPath}, which
    must be a C{expectedType} node: a worker's configuration started from
    the master's file is a mistake worth stopping for.
    """
    try:
        config, _ = load_cluster_config(configPath)
    except NoClusterSection as e:
        notConfigured(e, configPath)
    except ConfigError as e:
        print(f"wazuh-clusterd: CRITICAL: {e}", file=sys.stderr)
        raise SystemExit(1)
    if not config.disabled and config.node_type != expectedType:
        print(
            f"wazuh-clusterd: CRITICAL: {configPath} configures a {config.node_type} node,"
            f" but this .tac file runs a {expectedType}: use tac/{config.node_type}.tac",
            file=sys.stderr,
        )
        raise SystemExit(1)
    debug = os.environ.get("WAZUH_CLUSTER_DEBUG", "") not in ("", "0")
    application = Application("wazuhcluster")
    top = nodeService(configPath, home, debug, foreground=True)
    top.setServiceParent(application)  # also gives it the node's log observer
    return application
