"""
What the benchmarks share about the trees they build in the nodes' homes:
the real Wazuh ruleset, agents' names and addresses, and their status
(keep-alive) files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from figures import REPO  # bench/figures.py: first, it puts the checkout on sys.path
from wazuhcluster.agents.agentinfo import AGENT_INFO_FOLDER, keepAliveText

#: The Wazuh ruleset, beside the checkout.
RULESET = Path(REPO).parent / "shared" / "corpus" / "wazuh-ruleset"


def rulesetProblem() -> str | None:
    """Why the benchmarks that need the ruleset cannot run, or None."""
    return None if RULESET.is_dir() else f"the Wazuh ruleset is not at {RULESET}"


def writeRuleset(home: str) -> int:
    """The real ruleset under HOME/etc/{rules,decoders,lists}; returns the count of files under etc/."""
    for part in ("rules", "decoders", "lists"):
        shutil.copytree(RULESET / part, os.path.join(home, "etc", part), dirs_exist_ok=True)
    return sum(len(files) for _, _, files in os.walk(os.path.join(home, "etc")))


def agentName(i: int) -> str:
    return f"agent-{i:05d}"


def agentIP(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def statusName(i: int) -> str:
    return f"{agentName(i)}-{agentIP(i)}"


def writeStatus(folder: str, i: int, mtimeNs: int) -> None:
    """Agent i's keep-alive, written as a manager would: whole file (temporary + rename), the given mtime."""
    temporary = os.path.join(folder, ".benchtmp")  # no dash: never taken for a status
    with open(temporary, "wb") as f:
        f.write(keepAliveText(agentName(i), agentIP(i)))
    os.utime(temporary, ns=(mtimeNs, mtimeNs))
    os.replace(temporary, os.path.join(folder, statusName(i)))


def countStatuses(folder: str) -> int:
    """Status files in C{folder} (temporaries, which start with a dot, not counted)."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


class AgentLayout:
    """
    The homes of a run of one master and C{workers} workers under C{top},
    and where each of C{agents} agents reports: agent i (from 1) to worker
    (i - 1) % workers.
    """

    def __init__(self, top: str, agents: int, workers: int) -> None:
        self.top = top
        self.agents = agents
        self.workers = workers
        self.masterHome = os.path.join(top, "master")
        self.workerHomes = [os.path.join(top, f"worker{w:02d}") for w in range(workers)]
        self.workerNames = [f"bench-worker-{w:02d}" for w in range(workers)]

    def workerOf(self, i: int) -> int:
        return (i - 1) % self.workers

    def agentsOf(self, w: int) -> range:
        return range(w + 1, self.agents + 1, self.workers)

    def statusFolder(self, home: str) -> str:
        return os.path.join(home, *AGENT_INFO_FOLDER.split("/"))

    def changedPerWorker(self, change: float) -> list[int]:
        """How many agents of each worker change per cycle: C{change} of all, spread evenly."""
        total = max(1, round(self.agents * change))
        return [min(len(self.agentsOf(w)), total // self.workers + (1 if w < total % self.workers else 0))
                for w in range(self.workers)]
