"""
The lab's network: one network namespace per node, all joined to a bridge
(in a hub namespace of their own), each node with its own address.

    hub namespace: bridge br0 ── hN (veth) ══ eth0 in node N's namespace (10.X.Y.N+1/24)

Nothing touches the machine's own network: the namespaces and the veth pairs
are the lab's, named after it, and L{LabNetwork.teardown} deletes them all
(deleting a namespace deletes the interfaces in it).  A node's link is cut
on the hub side (its cable pulled: the node sees no error, its packets just
go nowhere) and restored the same way.

Needs root and iproute2; L{networkUnavailable} says why not when it cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Sequence


def ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)} failed: {result.stderr.strip()}")
    return result


def networkUnavailable() -> str | None:
    """Why the lab cannot build namespaces here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need the ip command (iproute2)"
    result = ip("netns", "list", check=False)
    if result.returncode != 0:
        return f"`ip netns` does not work here: {result.stderr.strip()}"
    return None


class LabNetwork:
    """The namespaces, bridge and links of one lab."""

    def __init__(self, labID: int, names: Sequence[str]) -> None:
        """
        @param labID: a number (0-9999) that keeps this lab's names and
            addresses apart from another lab's on the same machine.
        @param names: the nodes, master first.
        """
        self.labID = labID
        self.prefix = f"wzl{labID}"
        self.hub = f"{self.prefix}-hub"
        subnet = 100 + labID % 100, labID // 100 % 250
        self.addresses = {name: f"10.{subnet[0]}.{subnet[1]}.{index + 1}" for index, name in enumerate(names)}
        self.namespaces = {name: f"{self.prefix}-n{index}" for index, name in enumerate(names)}
        self._hubSide = {name: f"h{index}" for index, name in enumerate(names)}
        self.built = False

    def build(self) -> None:
        """Create everything; on failure, remove what was made and raise."""
        self.teardown()  # leftovers of an earlier lab with the same ID
        try:
            ip("netns", "add", self.hub)
            ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            ip("-n", self.hub, "link", "set", "br0", "up")
            ip("-n", self.hub, "link", "set", "lo", "up")
            for index, (name, namespace) in enumerate(self.namespaces.items()):
                ip("netns", "add", namespace)
                outer, inner = f"{self.prefix}a{index}", f"{self.prefix}b{index}"
                ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                ip("link", "set", outer, "netns", self.hub)
                ip("-n", self.hub, "link", "set", outer, "name", self._hubSide[name])
                ip("-n", self.hub, "link", "set", self._hubSide[name], "master", "br0")
                ip("-n", self.hub, "link", "set", self._hubSide[name], "up")
                ip("link", "set", inner, "netns", namespace)
                ip("-n", namespace, "link", "set", inner, "name", "eth0")
                ip("-n", namespace, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
                ip("-n", namespace, "link", "set", "eth0", "up")
                ip("-n", namespace, "link", "set", "lo", "up")
        except BaseException:
            self.teardown()
            raise
        self.built = True

    def cut(self, name: str) -> None:
        """Pull node C{name}'s cable."""
        ip("-n", self.hub, "link", "set", self._hubSide[name], "down")

    def restore(self, name: str) -> None:
        """Plug it back."""
        ip("-n", self.hub, "link", "set", self._hubSide[name], "up")

    def run(self, name: str, command: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run C{command} in node C{name}'s namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespaces[name], *command],
            capture_output=True, text=True, timeout=timeout,
        )

    def teardown(self) -> None:
        """Delete every namespace of this lab (and with them every link), whatever exists."""
        for namespace in [*self.namespaces.values(), self.hub]:
            ip("netns", "delete", namespace, check=False)
        for index in range(len(self.namespaces)):
            ip("link", "delete", f"{self.prefix}a{index}", check=False)
        self.built = False
