# A worker node as a twistd application file:
#
#     WAZUH_HOME=/var/ossec twistd -ny tac/worker.tac --pidfile /var/ossec/var/run/wazuh-clusterd.pid
#
# The node reads $WAZUH_HOME/etc/ossec.conf (or $WAZUH_CLUSTER_CONFIG), whose
# <cluster> section must say <node_type>worker</node_type>.  Set
# WAZUH_CLUSTER_DEBUG=1 for debug logging.  Or edit the two lines below.
import os

from wazuhcluster.tac import nodeApplication

HOME = os.environ.get("WAZUH_HOME", "/var/ossec")
CONFIG = os.environ.get("WAZUH_CLUSTER_CONFIG", os.path.join(HOME, "etc", "ossec.conf"))

application = nodeApplication(CONFIG, HOME, expectedType="worker")
