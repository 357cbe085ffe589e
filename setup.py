from setuptools import find_packages, setup

setup(
    name="wazuhcluster",
    version="4.9.0",
    description="A Twisted re-implementation of the Wazuh manager cluster daemon",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*", "bench"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/*.py"], "wazuhcluster.sync": ["cluster.json"]},
    install_requires=[
        "twisted>=24.7",
        "pyopenssl>=24",
        "service-identity>=24",
        "cryptography>=42",
        "attrs>=23",
        "treq",
        # api.yaml, as Wazuh 4 lays out its API settings.
        "pyyaml>=6",
        # The metrics endpoint: the reference implementation of the Prometheus
        # client (registry, metric types, text exposition, process_* metrics).
        "prometheus_client>=0.17",
    ],
    extras_require={"test": ["pytest", "pytest-twisted", "hypothesis"]},
    entry_points={
        "console_scripts": [
            "cluster_control = wazuhcluster.control.cli:main",
            "manage_agents = wazuhcluster.agents.manage:main",
            "cluster_api_users = wazuhcluster.api.users_cli:main",
        ]
    },
)
