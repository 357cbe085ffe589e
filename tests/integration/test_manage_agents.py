"""
manage_agents and the agent registry in real processes: the command line's
output and exit statuses, and concurrent registrations serialised by the lock.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

from wazuhcluster.agents.clientkeys import parseClientKeys

REPOSITORY = Path(__file__).resolve().parents[2]
KEY = "a" * 64
HEADER = f"# kept by hand\n001 web any {KEY}\nnot an agent\n".encode()


def environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPOSITORY) + (os.pathsep + path if path else "")}


def manage(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run manage_agents as the console script does, in its own process."""
    code = "import sys; from wazuhcluster.agents.manage import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, "--home", str(home), *argv],
        capture_output=True, text=True, env=environment(), timeout=60,
    )


def test_command_line(tmp_path: Path) -> None:
    home = tmp_path / "ossec"
    added = manage(home, "-a", "10.0.0.5", "-n", "web-01", "-g", "web")
    assert (added.returncode, added.stderr) == (0, "")
    prefix = "Agent added with ID 001 and key "
    assert added.stdout.startswith(prefix)
    line = base64.b64decode(added.stdout[len(prefix):].strip()).decode()
    assert line.split()[:3] == ["001", "web-01", "10.0.0.5"]
    assert (home / "etc" / "client.keys").read_text() == line + "\n"
    assert (home / "queue" / "agent-groups" / "001").read_text() == "web\n"

    refused = manage(home, "-a", "10.0.0.5", "-n", "web-02")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "already used by agent 001 (web-01, 10.0.0.5)" in refused.stderr

    listed = manage(home, "-l")
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == ["ID   Name    IP", "001  web-01  10.0.0.5", "Listing 1 agent(s)."]

    removed = manage(home, "-r", "001")
    assert (removed.returncode, removed.stdout) == (0, "Agent 001 (web-01, 10.0.0.5) removed.\n")
    assert manage(home, "-r", "001").returncode == 1
    assert not (home / "queue" / "agent-groups" / "001").exists()


def test_worker_refuses(tmp_path: Path) -> None:
    home = tmp_path / "worker"
    (home / "etc").mkdir(parents=True)
    (home / "etc" / "ossec.conf").write_text(
        "<ossec_config><cluster><name>wazuh</name><node_name>w1</node_name>"
        "<node_type>worker</node_type><key>9d273b53510fef702b54a92e9cffc82e</key>"
        "<port>1516</port><bind_addr>0.0.0.0</bind_addr><nodes><node>127.0.0.1</node></nodes>"
        "<hidden>no</hidden><disabled>no</disabled></cluster></ossec_config>\n"
    )
    result = manage(home, "-a", "any", "-n", "new")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "agents must be registered in the master node, which is not reachable\n"
    assert sorted(os.listdir(home / "etc")) == ["ossec.conf"]
    assert not (home / "queue").exists()


REGISTER_LOOP = """
import sys, time
from wazuhcluster.agents.registry import AgentRegistry
from wazuhcluster.home import WazuhHome
home, worker, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
registry = AgentRegistry(WazuhHome(home))
time.sleep(max(0.0, start - time.time()))
for i in range(count):
    print(registry.register(f"p{worker}-{i}", "any", group=f"g{worker}").agent.id)
"""


def test_concurrent_registrations(tmp_path: Path) -> None:
    """1,000 registrations from 4 processes: 1,000 distinct IDs and a well-formed file."""
    home = tmp_path / "master"
    (home / "etc").mkdir(parents=True)
    keysPath = home / "etc" / "client.keys"
    keysPath.write_bytes(HEADER)
    processes, perProcess = 4, 250
    start = time.time() + 1.0
    running = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_LOOP, str(home), str(n), str(perProcess), str(start)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
        )
        for n in range(processes)
    ]
    printed: list[str] = []
    try:
        for p in running:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            printed += out.split()
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()

    total = processes * perProcess
    assert len(printed) == len(set(printed)) == total
    data = keysPath.read_bytes()
    assert data.startswith(HEADER)
    keys = parseClientKeys(data)
    assert len(keys.warnings) == 1  # the hand-written "not an agent" line, kept
    ids = [a.id for a in keys.agents]
    assert ids[0] == "001"
    assert sorted(ids[1:], key=int) == [f"{n:03d}" for n in range(2, total + 2)]
    assert sorted(ids[1:]) == sorted(printed)
    assert {a.name for a in keys.agents[1:]} == {
        f"p{n}-{i}" for n in range(processes) for i in range(perProcess)
    }
    assert len({a.key for a in keys.agents}) == total + 1
    for agent in keys.agents[1:]:
        group = agent.name.split("-")[0].replace("p", "g")
        assert (home / "queue" / "agent-groups" / agent.id).read_text() == group + "\n"
    assert sorted(os.listdir(home / "etc")) == ["client.keys", "client.keys.lock"]
