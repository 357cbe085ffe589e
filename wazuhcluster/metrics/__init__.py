"""
Prometheus metrics of a node: what is counted (L{registry}), the event
loop's delay (L{reactorlag}) and the C{/metrics} endpoint (L{endpoint}).

The names and labels are the contract with dashboards and alert rules;
docs/metrics.md lists each one.
"""
