"""
Writing a node's home from scratch: an C{ossec.conf} with a C{<cluster>}
section and a C{local_internal_options.conf}.  For the demo cluster and the
benchmarks, which need working homes in a few lines.
"""

from __future__ import annotations

import os
from typing import Mapping

from .home import WazuhHome

_CLUSTER = """<ossec_config>
  <cluster>
    <name>{name}</name>
    <node_name>{nodeName}</node_name>
    <key>{key}</key>
    <node_type>{nodeType}</node_type>
    <port>{port}</port>
    <bind_addr>{bindAddress}</bind_addr>
    <nodes>
      <node>{master}</node>
    </nodes>
    <hidden>no</hidden>
    <disabled>no</disabled>
  </cluster>
</ossec_config>
"""


def writeNodeHome(
    home: str,
    nodeName: str,
    nodeType: str,
    key: str,
    port: int,
    clusterName: str = "wazuh",
    master: str = "127.0.0.1",
    bindAddress: str = "127.0.0.1",
    options: Mapping[str, float | int] | None = None,
    apiPort: int | None = None,
) -> WazuhHome:
    """
    Create C{home}/etc with the node's C{ossec.conf} and, given C{options}
    (internal option names without the C{cluster.} prefix), its
    C{local_internal_options.conf}; and its C{api/configuration/api.yaml}:
    the API on C{apiPort} of 127.0.0.1, or off without one (a demo or a
    benchmark must not take a real manager's port 55000).
    """
    wazuhHome = WazuhHome(os.path.abspath(home))
    os.makedirs(wazuhHome.path("etc"), exist_ok=True)
    with open(wazuhHome.ossecConf, "w") as f:
        f.write(
            _CLUSTER.format(
                name=clusterName, nodeName=nodeName, key=key, nodeType=nodeType,
                port=port, bindAddress=bindAddress, master=master,
            )
        )
    if options:
        with open(wazuhHome.internalOptions, "w") as f:
            f.writelines(f"cluster.{name}={value}\n" for name, value in options.items())
    os.makedirs(wazuhHome.path("api", "configuration"), exist_ok=True)
    with open(wazuhHome.path("api", "configuration", "api.yaml"), "w") as f:
        f.write(f"enabled: yes\nport: {apiPort}\n" if apiPort else "enabled: no\n")
    return wazuhHome
