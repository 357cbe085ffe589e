"""
A cluster in the lab: a master and workers as real C{twistd} processes, each
in its own network namespace with its own address when the machine allows
it (root, iproute2), else all on 127.0.0.1; and the faults to put them
through:

 - L{Lab.cut} / L{Lab.restore}: a node's link (namespaces only);
 - L{Lab.impair}: latency and loss between every worker and the master
   (C{tc netem} if the kernel has it, else the L{lab.impair} relay);
 - L{Lab.fillDisk} / L{Lab.freeDisk}: a worker whose home is a small tmpfs
   (root only), filled to the last byte and freed;
 - L{Lab.kill} / L{Lab.restart}: C{kill -9} and a new start of any node.

L{Lab.teardown} ends every process, deletes the namespaces and unmounts the
tmpfs homes, whatever happened (the lab is a context manager).  Everything
stays on this machine: servers listen on loopback or on the lab's own
namespace addresses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .network import LabNetwork, networkUnavailable
from .nodes import FAST_OPTIONS, Cluster, Node, free_port

#: The master's port inside the namespaces (Wazuh's own: the namespaces are ours alone).
NAMESPACE_PORT = 1516


class LabUnavailable(Exception):
    """The fault asked for needs what this machine does not give (root, namespaces)."""


def netemAvailable(lab: "Lab") -> bool:
    """Whether C{tc netem} works in this lab's namespaces."""
    if lab.network is None:
        return False
    name = lab.master.node_name
    result = lab.network.run(name, ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "1ms"])
    if result.returncode != 0:
        return False
    lab.network.run(name, ["tc", "qdisc", "del", "dev", "eth0", "root"])
    return True


class Lab:
    """A master and workers, and the faults of the lab."""

    def __init__(
        self,
        base: Path,
        workers: Sequence[str] = ("worker1", "worker2"),
        *,
        namespaces: bool | None = None,
        options: dict[str, float | int] | None = None,
        tmpfsMegabytes: dict[str, int] | None = None,
        labID: int | None = None,
    ) -> None:
        """
        @param namespaces: C{None} to use namespaces when the machine allows.
        @param tmpfsMegabytes: workers whose home is a tmpfs of that size.
        """
        self.base = base
        self.workerNames = list(workers)
        reason = networkUnavailable()
        if namespaces and reason:
            raise LabUnavailable(reason)
        self.useNamespaces = reason is None if namespaces is None else namespaces
        self.options = dict(FAST_OPTIONS if options is None else options)
        self.tmpfsMegabytes = dict(tmpfsMegabytes or {})
        self.labID = os.getpid() % 10000 if labID is None else labID
        self.cluster = Cluster(base)
        self.network: LabNetwork | None = None
        self.nodes: dict[str, Node] = {}
        self.mounts: list[Path] = []
        self.relays: list[subprocess.Popen[bytes]] = []
        self.netem = False

    # Building.

    @property
    def master(self) -> Node:
        return self.nodes["master"]

    @property
    def workers(self) -> list[Node]:
        return [self.nodes[name] for name in self.workerNames]

    def address(self, name: str) -> str:
        return self.network.addresses[name] if self.network is not None else "127.0.0.1"

    def _mountTmpfs(self, home: Path, megabytes: int) -> None:
        if os.geteuid() != 0:
            raise LabUnavailable("a tmpfs home needs root")
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0750", "wzlab", str(home)],
            check=True, capture_output=True, timeout=30,
        )
        self.mounts.append(home)

    def start(self) -> "Lab":
        """Build the network and the homes, start the master, then the workers; wait until all joined."""
        try:
            names = ["master", *self.workerNames]
            if self.useNamespaces:
                self.network = LabNetwork(self.labID, names)
                self.network.build()
                self.cluster.port = NAMESPACE_PORT
            masterAddress = self.address("master")
            self.nodes["master"] = self.cluster.master(
                options=self.options, bind_addr=masterAddress, master_address=masterAddress,
                netns=self.network.namespaces["master"] if self.network else None,
            )
            for name in self.workerNames:
                home = self.base / name
                if name in self.tmpfsMegabytes:
                    self._mountTmpfs(home, self.tmpfsMegabytes[name])
                self.nodes[name] = self.cluster.worker(
                    name, options=self.options, master_address=masterAddress,
                    netns=self.network.namespaces[name] if self.network else None,
                )
            self.master.start().wait_ready()
            for worker in self.workers:
                worker.start()
            for worker in self.workers:
                worker.wait_joined()
        except BaseException:
            self.teardown()
            raise
        return self

    # Faults.

    def cut(self, name: str) -> None:
        if self.network is None:
            raise LabUnavailable("cutting a link needs network namespaces")
        self.network.cut(name)

    def restore(self, name: str) -> None:
        if self.network is None:
            raise LabUnavailable("restoring a link needs network namespaces")
        self.network.restore(name)

    def impair(self, delay: float = 0.2, loss: float = 0.05) -> str:
        """
        Latency and loss on every link between a worker and the master, from
        now on: the workers are restarted through a relay (or netem is put on
        every namespace's link).  Returns which was used.
        """
        if netemAvailable(self):
            assert self.network is not None
            for name in self.nodes:
                self.network.run(name, [
                    "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
                    "delay", f"{int(delay * 1000)}ms", "loss", f"{loss * 100:g}%",
                ])
            self.netem = True
            return "netem"
        masterAddress = self.address("master")
        for worker in self.workers:
            port = NAMESPACE_PORT + 1 + len(self.relays) if self.network else free_port()
            command = [
                sys.executable, "-m", "lab.impair", "--listen", f"{masterAddress}:{port}",
                "--to", f"{masterAddress}:{self.cluster.port}", "--delay", str(delay), "--loss", str(loss),
            ]
            if self.network is not None:
                command = ["ip", "netns", "exec", self.network.namespaces["master"], *command]
            log = open(self.base / f"relay-{worker.node_name}.log", "wb")
            try:
                self.relays.append(subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]),
                ))
            finally:
                log.close()
            time.sleep(0.3)
            worker.stop()
            worker.port = port
            worker.write_config()
            mark = worker.mark()
            worker.start().wait_joined(since=mark, timeout=30)
        return "relay"

    def diskFree(self, name: str) -> int:
        st = os.statvfs(self.nodes[name].home)
        return st.f_bavail * st.f_frsize

    def fillDisk(self, name: str) -> Path:
        """Fill the tmpfs home of worker C{name} to the last byte."""
        home = self.nodes[name].home
        if home not in self.mounts:
            raise LabUnavailable(f"{name}'s home is not a tmpfs of the lab")
        filler = home / "lab-filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)
        return filler

    def freeDisk(self, name: str) -> None:
        (self.nodes[name].home / "lab-filler").unlink(missing_ok=True)

    def kill(self, name: str) -> None:
        """C{kill -9} node C{name}."""
        self.nodes[name].kill()

    def restart(self, name: str) -> Node:
        """Start node C{name} again (after a kill or a stop)."""
        node = self.nodes[name]
        if node.running():
            node.stop()
        return node.start()

    # The end.

    def teardown(self) -> None:
        """End every process, delete the namespaces, unmount the tmpfs homes."""
        try:
            for relay in self.relays:
                if relay.poll() is None:
                    relay.kill()
                relay.wait(timeout=10)
            self.cluster.cleanup()
        finally:
            if self.network is not None:
                self.network.teardown()
            for home in reversed(self.mounts):
                subprocess.run(["umount", "-l", str(home)], capture_output=True, timeout=30)
            self.mounts.clear()

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.teardown()
