"""
Run a lab cluster by hand, look at it, and tear it down with Ctrl-C:

    sudo python -m lab [--workers 2] [--loopback] [--impair 0.2,0.05] [--tmpfs worker1:32] [--base DIR]

It prints each node's home and address and C{cluster_control -l}; the
homes stay under C{--base} (a new temporary folder by default) for reading
the logs afterwards.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

from .cluster import Lab


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loopback", action="store_true", help="no namespaces: every node on 127.0.0.1")
    parser.add_argument("--impair", metavar="DELAY,LOSS", help="latency (s) and loss (fraction) on every link")
    parser.add_argument("--tmpfs", action="append", default=[], metavar="WORKER:MB", help="a worker's home on a tmpfs")
    parser.add_argument("--base", help="where the homes go (default: a new temporary folder)")
    arguments = parser.parse_args()
    base = Path(arguments.base or tempfile.mkdtemp(prefix="wazuhcluster-lab-"))
    tmpfs = {w: int(mb) for w, _, mb in (t.partition(":") for t in arguments.tmpfs)}
    lab = Lab(
        base, [f"worker{n}" for n in range(1, arguments.workers + 1)],
        namespaces=False if arguments.loopback else None, tmpfsMegabytes=tmpfs,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        lab.start()
        if arguments.impair:
            delay, loss = (float(x) for x in arguments.impair.split(","))
            print(f"Links impaired with {lab.impair(delay, loss)}.")
        for name, node in lab.nodes.items():
            print(f"{name:10} {lab.address(name):15} {node.home}")
        print(lab.master.control("-l").stdout)
        print("Running until Ctrl-C.")
        while all(node.running() for node in lab.nodes.values()):
            time.sleep(1)
        print("A node exited: see its cluster.log.")
    except KeyboardInterrupt:
        pass
    finally:
        lab.teardown()
        print(f"Torn down; homes and logs under {base}.")


if __name__ == "__main__":
    main()
