"""
The Prometheus endpoint of real nodes (twistd processes on loopback): what
a master and two workers export agrees with what ``cluster_control -i`` and
``-a`` show, and moves when the cluster does.
"""

from __future__ import annotations

import collections
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from lab.trees import AGENT_OPTIONS, agent_keep_alive, control_agents, manage
from tests.support.apiclients import ask
from wazuhcluster import __version__
from wazuhcluster.api.users import ApiUsers, ScryptCost

from .nodes import Cluster, Node, free_port, parse_health_more, port_is_bindable, wait_for, wazuh_time

USER, PASSWORD = "wazuh-api", "metrics test password"

#: Samples by metric sample name: {frozenset of labels: value}.
Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape(port: int) -> tuple[str, Samples]:
    """GET /metrics: its content type, and its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        contentType = response.headers["Content-Type"]
        text = response.read().decode("utf-8")
    samples: Samples = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][frozenset(sample.labels.items())] = sample.value
    return contentType, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(frozenset(labels.items()))


def with_metrics(node: Node, port: int) -> Node:
    node.options["cluster.metrics_port"] = port
    node.write_config()
    return node


def health(master: Node) -> dict[str, dict[str, str]]:
    result = master.control("-i", "more")
    assert result.returncode == 0, result.stdout + result.stderr
    _, _, nodes = parse_health_more(result.stdout)
    return {n.name: {k.strip(): v for k, v in n.fields.items()} for n in nodes}


def test_metrics_agree_with_cluster_control(cluster: Cluster, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("master", "worker1", "worker2", "api")}
    master = with_metrics(cluster.master(options=AGENT_OPTIONS), ports["master"])
    settings = master.home / "api" / "configuration"
    (settings / "api.yaml").write_text(yaml.safe_dump({"host": "127.0.0.1", "port": ports["api"]}))
    ApiUsers(str(settings / "users.json"), cost=ScryptCost(n=2**10, r=8, p=1)).add(USER, PASSWORD)
    master.start().wait_ready()
    workers = [with_metrics(cluster.worker(name, options=AGENT_OPTIONS), ports[name]).start()
               for name in ("worker1", "worker2")]
    nodes = [master, *workers]
    for worker in workers:
        worker.wait_joined()
    for node in nodes:
        wait_for(lambda: not port_is_bindable(ports[node.node_name]), f"{node.node_name}'s metrics port", alive=nodes)
    assert master.log_lines(f"Metrics served on http://127.0.0.1:{ports['master']}/metrics")

    # Agents in every status, as in test_agents_processes.
    for ip, name in [("10.0.0.5", "web"), ("any", "db"), ("10.0.0.7", "mail"), ("any", "spare")]:
        added = manage(master, "-a", ip, "-n", name, "-g", "default")
        assert added.returncode == 0, added.stderr
    agent_keep_alive(workers[0], "web", "10.0.0.5")
    agent_keep_alive(workers[0], "db", "any", "--age", "7200")
    agent_keep_alive(workers[1], "mail", "10.0.0.7", "--pending")
    wait_for(lambda: control_agents(master)[0].get("003", ("", "", ""))[1] == "Pending",
             "the statuses to reach the master", timeout=20, alive=nodes)

    # Both workers have synced client.keys (files were sent) and been checked since.
    def synced() -> bool:
        _, s = scrape(ports["master"])
        return all(
            (value(s, "wazuhcluster_files_sent_total", worker=w.node_name) or 0) > 0
            and (value(s, "wazuhcluster_integrity_syncs_total", worker=w.node_name, result="in_sync") or 0) > 0
            for w in workers
        )

    wait_for(synced, "both workers to be sent files and found in sync", timeout=30, alive=nodes)

    # The agents by status are cluster_control -a's (the listing is at most 30 s old: wait for it).
    table, _ = control_agents(master)
    shown = collections.Counter(status for _, status, _ in table.values())

    def agentsAgree() -> bool:
        _, s = scrape(ports["master"])
        return all(value(s, "wazuhcluster_agents", status=status) == shown[status]
                   for status in ("Active", "Disconnected", "Never connected", "Pending"))

    wait_for(agentsAgree, f"wazuhcluster_agents to show {dict(shown)}", timeout=40, alive=nodes)
    assert shown["Disconnected"] == 1 and shown["Pending"] == 1 and shown["Never connected"] == 1

    # Workers connected and their keep-alive ages are -i's.
    contentType, s = scrape(ports["master"])
    now = time.time()
    fields = health(master)
    assert contentType == "text/plain; version=0.0.4; charset=utf-8"
    assert value(s, "wazuhcluster_workers_connected") == len(fields) - 1 == 2
    for worker in workers:
        age = value(s, "wazuhcluster_keepalive_age_seconds", worker=worker.node_name)
        shownAge = now - wazuh_time(fields[worker.node_name]["Last keep alive"])
        assert age is not None and 0 <= age < 5 and abs(age - shownAge) < 2.5, (age, shownAge)
        # Every check the master counted took a measured time.
        checks = sum(v for k, v in s["wazuhcluster_integrity_syncs_total"].items() if ("worker", worker.node_name) in k)
        assert value(s, "wazuhcluster_integrity_sync_duration_seconds_count", worker=worker.node_name) == checks
        assert value(s, "wazuhcluster_integrity_syncs_total", worker=worker.node_name, result="failed") is None
        assert (value(s, "wazuhcluster_agent_info_updates_total", worker=worker.node_name) or 0) >= 1
    info = {dict(k)["node"]: dict(k) for k in s["wazuhcluster_node_info"]}
    assert info == {"master": {"node": "master", "cluster": cluster.name, "type": "master", "version": __version__}}
    assert value(s, "wazuhcluster_reactor_lag_seconds_count") > 0
    assert value(s, "process_resident_memory_bytes") > 10_000_000
    assert value(s, "wazuhcluster_threadpool_queue_length") is not None
    assert "wazuhcluster_master_connected" not in s

    # The API's answers are counted by method and status, refusals included.
    assert ask(ports["api"], "GET", "/cluster/nodes", auth=(USER, PASSWORD))[0] == 200
    assert ask(ports["api"], "GET", "/cluster/nodes", auth=(USER, "wrong"))[0] == 401
    _, s = scrape(ports["master"])
    assert value(s, "wazuhcluster_api_requests_total", method="GET", code="200") == 1
    assert value(s, "wazuhcluster_api_requests_total", method="GET", code="401") == 1
    assert value(s, "wazuhcluster_api_request_duration_seconds_count") == 2

    # A worker: joined, synced recently, files received; none of the master's metrics.
    _, s1 = scrape(ports["worker1"])
    assert value(s1, "wazuhcluster_master_connected") == 1
    assert value(s1, "wazuhcluster_reconnects_total") == 0
    assert (value(s1, "wazuhcluster_files_received_total") or 0) > 0
    assert time.time() - value(s1, "wazuhcluster_last_sync_timestamp_seconds") < 10
    end = wazuh_time(health(master)["worker1"]["Last synchronization"].split(" - ")[1])
    assert abs(value(s1, "wazuhcluster_last_sync_timestamp_seconds") - end) < 5
    assert "wazuhcluster_workers_connected" not in s1 and "wazuhcluster_agents" not in s1

    # The master goes: the workers say so; it comes back: one reconnection each.
    master.stop()
    wait_for(lambda: all(value(scrape(ports[w.node_name])[1], "wazuhcluster_master_connected") == 0 for w in workers),
             "the workers to show the master gone", timeout=20, alive=workers)
    master.start().wait_ready()
    wait_for(lambda: all(value(scrape(ports[w.node_name])[1], "wazuhcluster_reconnects_total") == 1
                         and value(scrape(ports[w.node_name])[1], "wazuhcluster_master_connected") == 1
                         for w in workers),
             "the workers to rejoin, once each", timeout=30, alive=nodes)


def test_metrics_port_refuses_what_is_not_a_scrape(cluster: Cluster) -> None:
    """Only GET /metrics; a body is not kept; the port is named when taken."""
    port = free_port()
    master = with_metrics(cluster.master(), port).start().wait_ready()
    wait_for(lambda: not port_is_bindable(port), "the metrics port", alive=[master])
    for method, path, status in (("GET", "/", 404), ("POST", "/metrics", 405), ("GET", "/metrics", 200)):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                got = response.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == status, (method, path)

    # A second node wanting the same metrics port says so and does not start.
    other = with_metrics(cluster.worker("worker1"), port)
    other.start()
    assert other.wait_exit(timeout=20) != 0
    assert f"cannot listen on 127.0.0.1:{port}" in other.stderr_text() + other.log_text()
