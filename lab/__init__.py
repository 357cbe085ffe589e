"""
The cluster lab: real twistd nodes on one machine, each in its own network
namespace (or on loopback), and the faults a cluster must survive.
"""
