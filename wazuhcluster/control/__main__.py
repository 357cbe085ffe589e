"""C{python -m wazuhcluster.control}: the same as C{cluster_control}."""

from .cli import main

main()
