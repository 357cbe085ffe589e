"""
Agent status files, C{HOME/queue/agent-info/NAME-IP}, as a Wazuh manager
writes them.

On each keep-alive of an agent, the manager it reports to rewrites the
agent's file with the text of that keep-alive, and the file's modification
time is the time of the keep-alive::

    Linux |web-01 |5.15.0 |#1 SMP |x86_64 [Ubuntu|ubuntu: 22.04 LTS] - Wazuh v4.9.0 / 3f2c...
    3f2c... merged.mg
    #"_agent_ip":10.0.0.5

An empty file means the agent has started its handshake and has not sent a
keep-alive yet (Pending).  C{IP} is the address the agent was registered
with (C{any} included); an agent registered with a network has no file.

L{writeAgentInfo} writes such a file, for demos, tests and benchmarks; the
same is available from the shell::

    python -m wazuhcluster.agents.agentinfo --home HOME NAME IP [--age SECONDS] [--pending]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Sequence

from ..files import writeFileAtomically
from .clientkeys import ipProblem, nameProblem

#: The folder of the status files, relative to the Wazuh home.
AGENT_INFO_FOLDER = "queue/agent-info"

#: The largest status a node accepts from another: a keep-alive is well under
#: 1 KiB, a few KiB with many labels.
MAX_STATUS_SIZE = 64 * 1024

_VERSION = re.compile(rb" - (Wazuh v[0-9][0-9A-Za-z.\-]*)")


def statusFileName(name: str, ip: str) -> str | None:
    """The name of the status file of agent C{name} registered with C{ip}, or None."""
    if "/" in ip:
        return None
    return f"{name}-{ip}"


def parseStatusFileName(fileName: str) -> tuple[str, str] | None:
    """
    The agent name and address a status file name stands for, or C{None}
    when it is not the name of a status file (a path, a temporary, garbage).
    """
    name, dash, ip = fileName.rpartition("-")
    if not dash or not name or "/" in ip:
        return None
    if nameProblem(name) is not None or ipProblem(ip) is not None:
        return None
    return name, ip


def versionIn(text: bytes) -> str:
    """The C{Wazuh vX.Y.Z} of a status's first line, or "" when it has none."""
    first = text.split(b"\n", 1)[0]
    found = _VERSION.search(first)
    return found.group(1).decode("ascii") if found else ""


def keepAliveText(name: str, ip: str, version: str = "4.9.0", merged: str = "ab73af41699f13fdd81903b5f23d8d00") -> bytes:
    """The text of a plausible keep-alive of agent C{name}."""
    return (
        f"Linux |{name} |5.15.0-91-generic |#101-Ubuntu SMP |x86_64"
        f" [Ubuntu|ubuntu: 22.04.3 LTS (Jammy Jellyfish)] - Wazuh v{version} / {merged}\n"
        f"{merged} merged.mg\n"
        f'#"_agent_ip":{ip if ip != "any" else "10.0.0.1"}\n'
    ).encode("ascii")


def writeAgentInfo(
    home: str,
    name: str,
    ip: str,
    when: float | None = None,
    version: str = "4.9.0",
    pending: bool = False,
) -> str:
    """
    Write the status file of agent C{name}, as the manager does on a
    keep-alive received at C{when} (now by default); C{pending} writes an
    empty file.  Returns the file's path.
    """
    problem = nameProblem(name) or ipProblem(ip)
    if problem is not None:
        raise ValueError(problem)
    fileName = statusFileName(name, ip)
    if fileName is None:
        raise ValueError(f"an agent registered with the network {ip} has no status file")
    folder = os.path.join(home, AGENT_INFO_FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, fileName)
    stamp = time.time() if when is None else when
    writeFileAtomically(
        path, b"" if pending else keepAliveText(name, ip, version), 0o660,
        durable=False, mtimeNs=round(stamp * 1_000_000_000),
    )
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wazuhcluster.agents.agentinfo",
        description="Write an agent's status file as a manager does on a keep-alive.",
    )
    parser.add_argument("--home", required=True, help="The node's Wazuh home folder.")
    parser.add_argument("name", help="The agent's name.")
    parser.add_argument("ip", help="The address the agent is registered with (or 'any').")
    parser.add_argument("--age", type=float, default=0.0, help="Seconds since the keep-alive (default 0).")
    parser.add_argument("--version", default="4.9.0", help="The agent's Wazuh version (default 4.9.0).")
    parser.add_argument("--pending", action="store_true", help="Write an empty file (Pending).")
    arguments = parser.parse_args(argv)
    try:
        path = writeAgentInfo(
            arguments.home, arguments.name, arguments.ip, time.time() - arguments.age,
            arguments.version, arguments.pending,
        )
    except (ValueError, OSError) as e:
        sys.stderr.write(f"Error: {e}\n")
        raise SystemExit(1)
    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
