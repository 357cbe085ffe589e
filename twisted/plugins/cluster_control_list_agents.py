from wazuhcluster.control.list_agents import ListAgentsAction

listAgents = ListAgentsAction()
