"""
Run a local demo cluster: a master and two workers on 127.0.0.1, each with
its own Wazuh home under a work folder, a random cluster key, the sample
rules on the master.  Prints `cluster_control -l` once the workers have
joined, registers sample agents on the master, writes their statuses on the
workers as their managers would, prints `cluster_control -a` once the
master shows them, then runs until Ctrl-C.

    python scripts/local_cluster.py [--work work/local-cluster] [--workers 2] [--port 1516] [--api-port 55000]

The commands it prints run as they are from the folder it was started in
(C{--shown-from}): C{cluster_control} is named by its path in the virtual
environment, which need not be active.
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.request
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from wazuhcluster.agents.agentinfo import writeAgentInfo
from wazuhcluster.agents.status import REGISTRATION_DATES
from wazuhcluster.api.users import ApiUsers, usersPath
from wazuhcluster.home import WazuhHome
from wazuhcluster.nodehome import writeNodeHome

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def freePort(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise SystemExit("no free port on 127.0.0.1")


def clusterControl(home: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wazuhcluster.control", "--home", home, *args],
        capture_output=True, text=True,
    )


def manageAgents(home: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from wazuhcluster.agents.manage import main; main(sys.argv[1:])",
         "--home", home, *args],
        capture_output=True, text=True,
    )


#: Sample agents: name, registered address, and how they report (the worker
#: index, or None for never connected), and how old their last keep-alive is.
SAMPLE_AGENTS = [
    ("web-01", "10.0.0.11", 1, 5),
    ("db-01", "any", 2, 7),
    ("mail-01", "10.0.0.13", 1, 3 * 3600),
    ("spare-01", "any", None, 0),
]

#: How long before the demo the sample agents were registered: before any
#: of their keep-alives, as a real registry's dates would be.
REGISTERED_AGO = 30 * 86400


def shownCommand(tool: str, shownFrom: str, *arguments: str) -> str:
    """
    A command line naming C{tool} of this virtual environment by a path that
    works from C{shownFrom} without activating it (relative when inside).
    """
    path = os.path.join(os.path.dirname(sys.executable), tool)
    relative = os.path.relpath(path, shownFrom)
    if not relative.startswith(os.pardir):
        path = relative if os.sep in relative else os.path.join(os.curdir, relative)
    return shlex.join([path, *arguments])


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(ROOT, "work", "local-cluster"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=1516, help="the cluster port, if free (else any free one)")
    parser.add_argument("--api-port", type=int, default=55000, help="the master's API port, if free (else any free one)")
    parser.add_argument("--shown-from", default=os.getcwd(), help="the folder the printed commands run from")
    parser.add_argument("--exit-after-join", action="store_true", help="stop once the cluster is up (for tests)")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    key = secrets.token_hex(16)
    port = freePort(args.port)
    apiPort = freePort(args.api_port)
    apiPassword = secrets.token_urlsafe(12)
    nodes = [("master", "master-node", "master")] + [
        (f"worker{n}", f"worker-node{n}", "worker") for n in range(1, args.workers + 1)
    ]
    # Every node's Prometheus metrics, each on a free port (docs/metrics.md).
    metricsPorts = {name: freePort(0) for _, name, _ in nodes}
    processes = []
    try:
        for folder, name, nodeType in nodes:
            home = os.path.join(args.work, folder)
            writeNodeHome(
                home, name, nodeType, key, port,
                options={"keep_alive": 5, "sync_integrity": 3, "sync_agent_info": 2,
                         "metrics_port": metricsPorts[name]},
                apiPort=apiPort if nodeType == "master" else None,
            )
            if nodeType == "master":
                shutil.copytree(os.path.join(ROOT, "sample", "etc"), os.path.join(home, "etc"), dirs_exist_ok=True)
                ApiUsers(usersPath(WazuhHome(home))).add("wazuh", apiPassword)
            processes.append(subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                 "-n", "wazuhcluster", "--config", os.path.join(home, "etc", "ossec.conf")],
                cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            ))
            if nodeType == "master":
                time.sleep(0.5)
        master = os.path.join(args.work, "master")
        deadline = time.monotonic() + 30
        listing = None
        while time.monotonic() < deadline:
            listing = clusterControl(master, "-l")
            if listing.returncode == 0 and listing.stdout.count(" worker ") == args.workers:
                break
            if any(p.poll() is not None for p in processes):
                raise SystemExit("a node exited: see the cluster.log files under " + args.work)
            time.sleep(0.3)
        else:
            raise SystemExit("the workers did not join in 30 s: see the cluster.log files under " + args.work)
        print(f"Local cluster up on 127.0.0.1:{port} (homes under {args.work}).\n")
        print(f"$ {shownCommand('cluster_control', args.shown_from, '--home', master, '-l')}")
        print(listing.stdout)
        samples = sorted(
            os.path.relpath(os.path.join(folder, name), os.path.join(ROOT, "sample"))
            for folder, _, names in os.walk(os.path.join(ROOT, "sample", "etc"))
            for name in names
        )
        workers = [os.path.join(args.work, f"worker{n}") for n in range(1, args.workers + 1)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            os.path.exists(os.path.join(w, s)) for w in workers for s in samples
        ):
            time.sleep(0.3)
        synced = all(os.path.exists(os.path.join(w, s)) for w in workers for s in samples)
        print(
            f"The master's sample rules ({len(samples)} files under etc/) "
            + ("have reached every worker." if synced else "have NOT reached every worker in 30 s: see the logs.")
        )
        showAgents(master, workers, args.shown_from)
        url = f"http://127.0.0.1:{apiPort}/cluster/healthcheck"
        print(f"The master's REST API ({apiAnswers(url, 'wazuh', apiPassword)}):")
        print(f'$ curl -u wazuh:{apiPassword} "{url}?pretty"\n')
        print("Each node's Prometheus metrics (docs/metrics.md; deploy/grafana/ has a dashboard):")
        for name, metricsPort in metricsPorts.items():
            metricsUrl = f"http://127.0.0.1:{metricsPort}/metrics"
            print(f"  {name + ':':14} {metricsUrl}  ({metricsAnswer(metricsUrl)})")
        print(f"$ curl -s http://127.0.0.1:{metricsPorts['master-node']}/metrics | grep ^wazuhcluster_workers\n")
        print(f"Logs: {args.work}/*/logs/cluster.log")
        if args.exit_after_join:
            return
        print("Running until Ctrl-C.")
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _stop)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        print("A node exited: see the cluster.log files under " + args.work)
    except KeyboardInterrupt:
        print("Stopping.")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def showAgents(master: str, workers: list[str], shownFrom: str) -> None:
    """Register the sample agents, write their statuses on the workers, show -a."""
    for name, ip, _, _ in SAMPLE_AGENTS:
        added = manageAgents(master, "-a", ip, "-n", name)
        if added.returncode != 0:
            print(f"Could not register {name}: {added.stderr.strip()}")
            return
    backdateRegistrations(master, time.time() - REGISTERED_AGO)
    # Statuses are taken by the master only for agents it registers: write
    # them once the workers have the new client.keys (a worker removes the
    # files of agents it does not know).
    keys = os.path.join(master, "etc", "client.keys")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        _read(os.path.join(w, "etc", "client.keys")) == _read(keys) for w in workers
    ):
        time.sleep(0.3)
    now = time.time()
    for name, ip, worker, age in SAMPLE_AGENTS:
        if worker is not None and worker <= len(workers):
            writeAgentInfo(workers[worker - 1], name, ip, when=now - age)
    reported = sum(1 for _, _, w, _ in SAMPLE_AGENTS if w is not None and w <= len(workers))
    deadline = time.monotonic() + 30
    listing = None
    while time.monotonic() < deadline:
        listing = clusterControl(master, "-a")
        if listing.returncode == 0 and listing.stdout.count(" worker-node") >= reported:
            break
        time.sleep(0.5)
    print("\nSample agents registered on the master; their statuses written on the workers.")
    print(f"$ {shownCommand('cluster_control', shownFrom, '--home', master, '-a')}")
    print(listing.stdout if listing is not None else "")


def backdateRegistrations(master: str, when: float) -> None:
    """
    Date the registrations of C{queue/agents-timestamp} (C{ID NAME IP DATE
    TIME}) at C{when}, one minute apart, as if the agents had been enrolled
    long before the demo.
    """
    path = os.path.join(master, REGISTRATION_DATES)
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    with open(path, "w") as f:
        for index, parts in enumerate(lines):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when + 60 * index))
            f.write(" ".join(parts[:3] + [stamp]) + "\n")


def apiAnswers(url: str, user: str, password: str) -> str:
    """Ask the API once, as the printed curl line would: what it said."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = json.load(answer)["data"]
    except (OSError, ValueError, KeyError) as e:
        return f"NOT answering: {e}"
    return f"answering: {data['n_connected_nodes']} connected nodes"


def metricsAnswer(url: str) -> str:
    """Scrape C{url} once: how many samples it gave."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            text = answer.read().decode("utf-8")
    except (OSError, ValueError) as e:
        return f"NOT answering: {e}"
    return f"answering: {sum(1 for line in text.splitlines() if line and not line.startswith('#'))} samples"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    main()
