"""
The deployment files work as docs/operations.md says.

- C{deploy/wazuh-clusterd.service}: C{systemd-analyze verify} finds nothing
  wrong with it, and its C{ExecStart} command line, run as systemd would run
  it (with this environment's twistd and a temporary home in place of
  C{/var/ossec}), starts a node that stops cleanly on SIGTERM.
- C{deploy/nginx-agents.conf}: C{nginx -t} accepts it, and nginx running it
  (pointed at TCP echo servers on loopback instead of the managers) sends
  agent connections to a backend, always the same one for the same source
  address, and registrations to the master.
- docs/operations.md shows both as they are.

Tools that are missing (systemd-analyze, nginx, its stream module) skip
their tests and say what to install.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from wazuhcluster.nodehome import writeNodeHome

T = TypeVar("T")

REPOSITORY = Path(__file__).resolve().parents[2]
UNIT = REPOSITORY / "deploy" / "wazuh-clusterd.service"
NGINX_AGENTS = REPOSITORY / "deploy" / "nginx-agents.conf"
OPERATIONS_MD = REPOSITORY / "docs" / "operations.md"

#: The home the unit names, replaced by a temporary one when it runs here.
UNIT_HOME = "/var/ossec"

#: The environment systemd gives a system service (no PYTHONPATH, no HOME).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Where nginx lives when PATH (a non-root user's) does not list it.
SBIN_FOLDERS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/nginx/sbin")

TIMEOUT = 20.0


def waitFor(condition: Callable[[], T], what: str, timeout: float = TIMEOUT,
            process: subprocess.Popen | None = None) -> T:
    """Poll C{condition} until it is true; fail after C{timeout} or if C{process} ends."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited with status {process.returncode} before {what}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def endProcess(process: subprocess.Popen) -> None:
    """End a process this test started (and its process group, which it leads)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


# The systemd unit.


def unitEntries(text: str) -> dict[tuple[str, str], list[str]]:
    """The (section, key) pairs of a unit file and their values, in order."""
    entries: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


def unitSetting(section: str, key: str) -> str:
    values = unitEntries(UNIT.read_text()).get((section, key))
    assert values, f"{UNIT.name} has no {key}= in [{section}]"
    return values[-1]


def twistdHere(folder: Path) -> str:
    """
    The twistd of the Python running the tests: the script beside its
    interpreter, or a wrapper that runs twistd with that interpreter.
    """
    beside = Path(sys.executable).parent / "twistd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    wrapper = folder / "twistd"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} -c "
        "'from twisted.scripts.twistd import run; run()' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def unitWithExecStart(unitText: str, program: str) -> str:
    """The unit's text, with its ExecStart program replaced by C{program}."""
    lines = []
    for line in unitText.splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line.partition("=")[2])
            line = "ExecStart=" + shlex.join([program, *argv[1:]])
        lines.append(line)
    return "\n".join(lines) + "\n"


def verify(unit: Path) -> tuple[int, list[str]]:
    """
    C{systemd-analyze verify} of C{unit}: its exit status and the lines of
    its output about this unit (lines about the host's own units are not
    this test's business).
    """
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=unit.parent,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if unit.name in line or str(unit.parent) in line]


def test_unit_settings() -> None:
    """What docs/operations.md says of the unit is what it holds."""
    entries = unitEntries(UNIT.read_text())
    assert unitSetting("Service", "Type") == "simple"
    assert unitSetting("Service", "Restart") == "on-failure"
    assert "network-online.target" in unitSetting("Unit", "After").split()
    assert "network-online.target" in unitSetting("Unit", "Wants").split()
    assert unitSetting("Install", "WantedBy") == "multi-user.target"
    assert unitSetting("Service", "NoNewPrivileges") == "yes"
    assert unitSetting("Service", "ProtectSystem") in ("full", "strict")
    assert UNIT_HOME in unitSetting("Service", "ReadWritePaths").split()
    assert ("Service", "ExecReload") not in entries, "the node has no reload: it reads its configuration at start"
    assert ("Service", "PIDFile") not in entries, "Type=simple needs no PIDFile="

    argv = shlex.split(unitSetting("Service", "ExecStart"))
    assert argv[0].endswith("/twistd") and os.path.isabs(argv[0])
    plugin = argv.index("wazuhcluster")
    twistdOptions, nodeOptions = argv[1:plugin], argv[plugin + 1:]
    assert "-n" in twistdOptions, "twistd must stay in the foreground for Type=simple"
    assert nodeOptions[:2] == ["--config", f"{UNIT_HOME}/etc/ossec.conf"]
    # The pid file is in the folder systemd makes at start and removes at stop.
    pidFile = twistdOptions[twistdOptions.index("--pidfile") + 1]
    assert os.path.dirname(pidFile) == "/run/" + unitSetting("Service", "RuntimeDirectory")


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing wrong with the unit."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    # verify checks that ExecStart's program exists: use this environment's.
    unit = tmp_path / UNIT.name
    unit.write_text(unitWithExecStart(UNIT.read_text(), twistdHere(tmp_path)))
    status, complaints = verify(unit)
    assert status == 0 and not complaints, f"systemd-analyze verify {UNIT.name}:\n" + "\n".join(complaints)

    # The check sees mistakes: a misspelt value is reported (and still exits 0).
    broken = tmp_path / "broken" / UNIT.name
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("Restart=on-failure", "Restart=on-failur"))
    status, complaints = verify(broken)
    assert any("on-failur" in line for line in complaints), complaints


def test_unit_command_runs_a_node(tmp_path: Path) -> None:
    """
    The unit's ExecStart, as systemd runs it (its environment, its umask,
    the runtime folder it makes), starts a master that stops cleanly on
    SIGTERM, systemctl stop's signal.
    """
    home = tmp_path / "ossec"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o750)  # RuntimeDirectory=
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = freePort()
    writeNodeHome(str(home), "master", "master", os.urandom(16).hex(), port)
    # The API is on by default on a master, at 55000: not in a test.
    (home / "api" / "configuration").mkdir(parents=True, exist_ok=True)
    (home / "api" / "configuration" / "api.yaml").write_text("enabled: no\n")

    runtimeFolder = "/run/" + unitSetting("Service", "RuntimeDirectory")

    def here(argument: str) -> str:
        for unitPath, testPath in ((UNIT_HOME, home), (runtimeFolder, runtime)):
            if argument == unitPath or argument.startswith(unitPath + "/"):
                return str(testPath) + argument[len(unitPath):]
        return argument

    argv = shlex.split(unitSetting("Service", "ExecStart"))
    argv = [twistdHere(tmp_path)] + [here(a) for a in argv[1:]]
    environment = {"PATH": SYSTEMD_PATH, "LANG": "C"}
    if "PYTHONPATH" in os.environ:
        environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
    pidFile = Path(argv[argv.index("--pidfile") + 1])
    log = home / "logs" / "cluster.log"
    output = tmp_path / "journal.txt"
    with open(output, "wb") as journal:
        process = subprocess.Popen(
            argv, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=journal,
            stderr=subprocess.STDOUT, start_new_session=True,
            umask=int(unitSetting("Service", "UMask"), 8),
        )
    try:
        started = "Starting master node master of cluster wazuh"
        waitFor(lambda: log.exists() and started in log.read_text(), "the node to log that it started",
                process=process)
        waitFor(lambda: accepts(port), f"the master to listen on 127.0.0.1:{port}", process=process)
        waitFor(lambda: (home / "queue" / "cluster" / "c-internal.sock").exists(), "the control socket",
                process=process)
        assert pidFile.read_text().strip() == str(process.pid)
        assert not (home / "var" / "run" / "wazuh-clusterd.pid").exists()
        # The umask of the unit: nothing the node writes is world-readable.
        assert stat.S_IMODE(log.stat().st_mode) & 0o007 == 0

        process.send_signal(signal.SIGTERM)
        status = process.wait(15)
        # A requested stop: status 0, so Restart=on-failure does not restart it.
        assert status == 0, output.read_text()
    finally:
        endProcess(process)
        print(output.read_text())  # shown if the test fails
    assert not pidFile.exists(), "twistd leaves no pid file behind"
    assert not accepts(port)
    assert started in output.read_text(), "the log also goes to standard output: the journal"
    assert "Master node master stopped." in log.read_text().splitlines()[-1], log.read_text()
    assert "CRITICAL" not in log.read_text() and "ERROR" not in log.read_text(), log.read_text()
    assert list(cwd.iterdir()) == [], "nothing is written in the working folder (/ under systemd)"


# nginx.


def nginxProgram() -> str:
    found = shutil.which("nginx") or next(
        (str(Path(f) / "nginx") for f in SBIN_FOLDERS if os.access(Path(f) / "nginx", os.X_OK)), None
    )
    if found is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx libnginx-mod-stream)")
    return found


def streamModuleLines(nginx: str) -> str:
    """The main-context lines that give this nginx its stream module."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=30)
    options = built.stdout + built.stderr
    if re.search(r"--with-stream(\s|$)", options):
        return ""
    if "--with-stream=dynamic" not in options:
        pytest.skip("this nginx is built without the stream module")
    found = re.search(r"--modules-path=(\S+)", options)
    prefix = re.search(r"--prefix=(\S+)", options)
    folders = [found.group(1)] if found else []
    folders.append(os.path.join(prefix.group(1) if prefix else "/usr/share/nginx", "modules"))
    for folder in folders:
        module = Path(folder) / "ngx_stream_module.so"
        if module.exists():
            return f"load_module {module};\n"
    pytest.skip(
        f"nginx's stream module (ngx_stream_module.so) is not installed in {', '.join(folders)}"
        " (Debian: apt-get install libnginx-mod-stream)"
    )


def mainConfig(folder: Path, nginx: str, included: Path) -> Path:
    """An nginx.conf in C{folder} that includes C{included} and writes only in C{folder}."""
    conf = folder / "nginx.conf"
    conf.write_text(
        streamModuleLines(nginx)
        + f"pid {folder}/nginx.pid;\n"
        + f"error_log {folder}/error.log;\n"
        + "worker_processes 1;\n"
        + "events { worker_connections 128; }\n"
        + f"include {included};\n"
    )
    return conf


def nginxCommand(nginx: str, folder: Path, conf: Path) -> list[str]:
    return [nginx, "-p", f"{folder}/", "-e", str(folder / "error.log"), "-c", str(conf)]


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    """nginx -t accepts deploy/nginx-agents.conf in the main context."""
    nginx = nginxProgram()
    conf = mainConfig(tmp_path, nginx, NGINX_AGENTS)
    result = subprocess.run(nginxCommand(nginx, tmp_path, conf) + ["-t"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def upstreams(text: str) -> dict[str, str]:
    """The upstream blocks of an nginx configuration: name to body."""
    return dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", text))


def test_nginx_config_shape() -> None:
    """TCP 1514 to the workers, sticky; TCP 1515 to the master only; 1516 not balanced."""
    text = re.sub(r"#.*", "", NGINX_AGENTS.read_text())
    blocks = upstreams(text)
    workers = [body for body in blocks.values() if re.search(r":1514\b", body)]
    masters = [body for body in blocks.values() if re.search(r":1515\b", body)]
    assert len(workers) == 1 and len(masters) == 1, blocks
    assert re.search(r"^\s*hash\s+\$remote_addr\s+consistent;", workers[0], re.M)
    assert len(re.findall(r"^\s*server\s", workers[0], re.M)) >= 2
    assert len(re.findall(r"^\s*server\s", masters[0], re.M)) == 1
    assert re.search(r"^\s*stream\s*\{", text, re.M) and "http" not in text
    assert re.findall(r"listen\s+([^;]+);", text) == ["1514", "1515"], "TCP (no udp), on 1514 and 1515"
    assert "1516" not in text


def test_operations_md_shows_the_shipped_files() -> None:
    """docs/operations.md shows the nginx configuration as shipped, and the unit's ExecStart."""
    doc = OPERATIONS_MD.read_text()
    shipped = NGINX_AGENTS.read_text()
    stream = shipped[shipped.index("stream {"):].strip()
    assert stream in [block.strip() for block in re.findall(r"```nginx\n(.*?)```", doc, re.S)], (
        "docs/operations.md must show the stream block of deploy/nginx-agents.conf as it is"
    )
    assert "ExecStart=" + unitSetting("Service", "ExecStart") in doc


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.request.recv(1024)
            if not chunk:
                return
            data += chunk
        self.request.sendall(self.server.name.encode() + b" " + data)  # type: ignore[attr-defined]


class EchoServer(socketserver.ThreadingTCPServer):
    """A backend on 127.0.0.1 that answers each line with its name and the line."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.name = name
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.shutdown()
            self.server_close()
            self.thread.join(5)


@pytest.fixture
def backends() -> Iterator[dict[str, EchoServer]]:
    """Echo servers standing for the workers and the master; always stopped."""
    servers: dict[str, EchoServer] = {}
    try:
        for name in ("worker1", "worker2", "master"):
            servers[name] = EchoServer(name)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def through(port: int, source: str, line: str = "hello") -> str:
    """Connect to 127.0.0.1:C{port} from address C{source}; the backend that answers."""
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(1024)
            if not chunk:
                break
            answer += chunk
    name, _, echoed = answer.decode().rstrip("\n").partition(" ")
    assert echoed == line, f"{source} -> :{port}: unexpected answer {answer!r}"
    return name


def forLoopback(text: str, agentsPort: int, registrationPort: int, workerPorts: list[int],
                masterPort: int) -> str:
    """The shipped configuration with loopback ports in place of the managers' addresses."""
    blocks = upstreams(re.sub(r"#.*", "", text))
    workersName = next(name for name, body in blocks.items() if ":1514" in body)
    masterName = next(name for name, body in blocks.items() if ":1515" in body)

    def servers(ports: list[int], expected: int) -> Callable[[re.Match[str]], str]:
        remaining = iter(ports)

        def replace(m: re.Match[str]) -> str:
            return f"{m.group(1)}127.0.0.1:{next(remaining)}"

        def inBlock(block: re.Match[str]) -> str:
            body, n = re.subn(rf"^(\s*server\s+)\S+:{expected}\b", replace, block.group(0), flags=re.M)
            assert n == len(ports), f"{n} servers on port {expected}, {len(ports)} backends"
            return body

        return inBlock

    text = re.sub(rf"upstream\s+{workersName}\s*\{{[^}}]*\}}", servers(workerPorts, 1514), text)
    text = re.sub(rf"upstream\s+{masterName}\s*\{{[^}}]*\}}", servers([masterPort], 1515), text)
    text, n = re.subn(r"listen\s+1514\b", f"listen 127.0.0.1:{agentsPort}", text)
    assert n == 1
    text, n = re.subn(r"listen\s+1515\b", f"listen 127.0.0.1:{registrationPort}", text)
    assert n == 1
    return text


def test_nginx_balances_agents_and_keeps_them_on_their_worker(
    tmp_path: Path, backends: dict[str, EchoServer]
) -> None:
    nginx = nginxProgram()
    workerCount = len(re.findall(r"^\s*server\s+\S+:1514\b", NGINX_AGENTS.read_text(), re.M))
    assert workerCount == 2, "the test stands two echo servers for the shipped two workers"
    workers = [backends["worker1"], backends["worker2"]]
    agentsPort, registrationPort = freePort(), freePort()
    agents = tmp_path / "agents.conf"
    agents.write_text(forLoopback(
        NGINX_AGENTS.read_text(), agentsPort, registrationPort,
        [w.port for w in workers], backends["master"].port,
    ))
    conf = mainConfig(tmp_path, nginx, agents)
    command = nginxCommand(nginx, tmp_path, conf) + ["-g", "daemon off;"]
    with open(tmp_path / "nginx.out", "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        waitFor(lambda: accepts(agentsPort) and accepts(registrationPort), "nginx to listen", process=process)

        # The same address always reaches the same worker.
        first = {through(agentsPort, "127.0.0.1") for _ in range(6)}
        assert len(first) == 1 and first <= {"worker1", "worker2"}, first

        # Other addresses (all of 127/8 is local) stick to theirs too, and
        # the agents are spread over both workers.
        chosen = {}
        for i in range(2, 34):
            source = f"127.0.0.{i}"
            chosen[source] = through(agentsPort, source)
            assert through(agentsPort, source) == chosen[source], f"{source} changed worker"
        assert set(chosen.values()) == {"worker1", "worker2"}, chosen

        # Registrations go to the master, whatever the address.
        assert {through(registrationPort, f"127.0.0.{i}") for i in (1, 2, 3)} == {"master"}

        # While its worker is down, an agent's new connection goes to the other.
        (mine,) = first
        backends[mine].stop()
        other = ({"worker1", "worker2"} - first).pop()
        assert through(agentsPort, "127.0.0.1") == other
    finally:
        endProcess(process)
        print((tmp_path / "nginx.out").read_text(), (tmp_path / "error.log").read_text()
              if (tmp_path / "error.log").exists() else "")
