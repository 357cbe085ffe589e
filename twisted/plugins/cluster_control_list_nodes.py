from wazuhcluster.control.list_nodes import ListNodesAction

listNodes = ListNodesAction()
