"""
wazuhcluster: a Twisted re-implementation of the Wazuh manager cluster daemon.

The version is the Wazuh release whose cluster behaviour this package follows;
peers refuse each other when their major.minor versions differ.
"""

__version__ = "4.9.0"
