from twisted.application.service import ServiceMaker

wazuhcluster = ServiceMaker(
    "wazuh cluster node", "wazuhcluster.tap", "Run a Wazuh cluster node (master or worker).", "wazuhcluster"
)
