from wazuhcluster.control.health import HealthAction

health = HealthAction()
