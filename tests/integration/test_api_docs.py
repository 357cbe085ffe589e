"""
The API's documentation against the API itself.

- C{docs/openapi.yaml} describes exactly the routes of
  L{wazuhcluster.api.endpoints.routes}, declares every path parameter, and
  names only error codes the API has; C{docs/api.md}'s tables agree.
- Every C{curl} example of C{docs/api.md} is run, in order, against a real
  master and worker, and answers what the page shows after it.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from wazuhcluster.api import envelope, router
from wazuhcluster.api.endpoints import AGENT_FIELDS, NODE_FIELDS, ApiContext, routes
from wazuhcluster.api.settings import loadApiSettings
from wazuhcluster.api.users import ApiUsers
from wazuhcluster.home import WazuhHome
from wazuhcluster.stats import COUNTERS

from .nodes import FAST_OPTIONS, Cluster, Node, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPENAPI = DOCS / "openapi.yaml"
API_MD = DOCS / "api.md"

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

#: The router's answer to an unexpected failure (3.x's "Internal error").
INTERNAL_ERROR = 3

#: What the examples of docs/api.md use.
DOC_ADDRESS = "localhost:55000"
USER, PASSWORD = "wazuh", "wazuh-api-1"


# The OpenAPI document and the route table. --------------------------------


def openapi() -> dict[str, Any]:
    with open(OPENAPI, encoding="utf-8") as f:
        return yaml.safe_load(f)


def route_table() -> set[tuple[str, str]]:
    """(METHOD, /openapi/{style}) of every route; the handlers are never called."""
    context = ApiContext(config=object(), view=object(), registration=object(), calls=object())
    return {(r.method, re.sub(r":(\w+)", r"{\1}", r.pattern)) for r in routes(context)}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(METHOD, path, operation, path item) of every operation of the document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation, item


def resolve(document: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """C{value}, or what its local C{$ref} points to."""
    ref = value.get("$ref")
    if ref is None:
        return value
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    target: Any = document
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def error_codes(document: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(where, code, HTTP status) of every x-error-codes entry, the top level's included."""
    for entry in document.get("x-error-codes", []):
        yield "top level", entry["code"], entry["status"]
    for method, path, operation, _ in operations(document):
        assert "x-error-codes" in operation, f"{method} {path} has no x-error-codes (use [] for none)"
        for entry in operation["x-error-codes"]:
            assert set(entry) == {"code", "status", "description"}, f"{method} {path}: {entry}"
            yield f"{method} {path}", entry["code"], entry["status"]


def known_codes() -> set[int]:
    # 3 is the router's answer to a handler's unexpected failure.
    assert INTERNAL_ERROR in envelope.MESSAGES
    assert f"ApiError({INTERNAL_ERROR}" in inspect.getsource(router)
    return set(envelope.MESSAGES)


def test_openapi_paths_are_the_route_table() -> None:
    document = openapi()
    assert document["openapi"].startswith("3.0.")
    documented = {(method, path) for method, path, _, _ in operations(document)}
    table = route_table()
    assert documented - table == set(), "documented, but no such route"
    assert table - documented == set(), "routes missing from docs/openapi.yaml"
    assert len(table) == len(routes(ApiContext(object(), object(), object(), object()))), "a route twice"


def test_openapi_path_parameters_are_declared() -> None:
    document = openapi()
    for method, path, operation, item in operations(document):
        parameters = [resolve(document, p) for p in item.get("parameters", []) + operation.get("parameters", [])]
        declared = {p["name"] for p in parameters if p["in"] == "path"}
        in_path = set(re.findall(r"\{(\w+)\}", path))
        assert declared == in_path, f"{method} {path}: path parameters declared {declared}, in the path {in_path}"
        for p in parameters:
            if p["in"] == "path":
                assert p.get("required") is True, f"{method} {path}: path parameter {p['name']} must be required"
        names = [(p["name"], p["in"]) for p in parameters]
        assert len(names) == len(set(names)), f"{method} {path}: a parameter declared twice: {names}"


def test_openapi_query_parameters_are_the_apis() -> None:
    document = openapi()
    used = set()
    for _, _, operation, item in operations(document):
        for p in item.get("parameters", []) + operation.get("parameters", []):
            p = resolve(document, p)
            if p["in"] == "query":
                used.add(p["name"])
    assert used == {
        "pretty", "wait_for_complete", "offset", "limit", "sort", "search", "select", "q", "type", "node",
        "status", "node_name", "name", "ip", "version", "group", "os.platform", "os.version", "os.name", "manager",
        "older_than", "purge", "path", "overwrite", "validation", "date",
        "section", "field", "type_log", "category",
    }


def test_openapi_query_parameters_are_the_routes() -> None:
    """Each operation declares exactly the query parameters its route takes (the router refuses others)."""
    document = openapi()
    table = {
        (r.method, re.sub(r":(\w+)", r"{\1}", r.pattern)): set(r.allParameters) | set(router.ENVELOPE_PARAMETERS)
        for r in routes(ApiContext(object(), object(), object(), object()))
    }
    for method, path, operation, item in operations(document):
        declared = {
            p["name"] for p in (resolve(document, p) for p in item.get("parameters", []) + operation.get("parameters", []))
            if p["in"] == "query"
        }
        assert declared == table[(method, path)], f"{method} {path}"


def test_openapi_error_codes_exist() -> None:
    document = openapi()
    known = known_codes()
    seen = set()
    for where, code, status in error_codes(document):
        assert code in known, f"{where}: error {code} is not in envelope.MESSAGES"
        assert status == envelope.httpStatus(code) or (code, status) == (614, 413), (
            f"{where}: error {code} with HTTP status {status}"
        )
        seen.add(code)
    enum = set(document["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    assert enum == known, "the Error schema's codes are not envelope.MESSAGES"
    assert seen == known, f"codes no operation mentions: {sorted(known - seen)}"
    # Every number in a description that looks like an error code is one.
    text = OPENAPI.read_text(encoding="utf-8")
    for mentioned in re.findall(r"\berror (\d+)", text):
        assert int(mentioned) in known, f"docs/openapi.yaml mentions error {mentioned}"


def test_openapi_error_statuses_have_responses() -> None:
    document = openapi()
    for method, path, operation, _ in operations(document):
        statuses = set(operation["responses"])
        assert "401" in statuses, f"{method} {path}: no 401"
        assert "default" in statuses, f"{method} {path}: no default (the router's errors)"
        for entry in operation["x-error-codes"]:
            assert str(entry["status"]) in statuses, (
                f"{method} {path}: error {entry['code']} has HTTP {entry['status']}, not among its responses"
            )


def test_openapi_schemas_have_the_apis_fields() -> None:
    schemas = openapi()["components"]["schemas"]
    assert tuple(schemas["Node"]["properties"]) == NODE_FIELDS
    assert tuple(schemas["Agent"]["properties"]) == AGENT_FIELDS
    assert set(schemas["NodeStats"]["properties"]) == {"node", "since", *COUNTERS}


# docs/api.md's tables. ------------------------------------------------------


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the rows of the Markdown table whose header line starts with C{header}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        rows.append([c.strip().replace("\\|", "|") for c in cells])  # "\|": a "|" in a cell
    return rows


def test_api_md_tables_match_the_api() -> None:
    text = API_MD.read_text(encoding="utf-8")
    errors = {int(row[0]): row for row in table_rows(text, "| code | HTTP | message |")}
    assert set(errors) == known_codes()
    for code, message in envelope.MESSAGES.items():
        assert errors[code][2] == message, f"error {code}: the table says {errors[code][2]!r}"
    endpoints = {
        (row[0].strip("`"), re.sub(r":(\w+)", r"{\1}", row[1].strip("`")))
        for row in table_rows(text, "| method | path |")
    }
    assert endpoints == route_table()
    # Each endpoint's errors are those of its operation in docs/openapi.yaml.
    documented = {
        (method, path): {entry["code"] for entry in operation["x-error-codes"]}
        for method, path, operation, _ in operations(openapi())
    }
    for row in table_rows(text, "| method | path |"):
        key = (row[0].strip("`"), re.sub(r":(\w+)", r"{\1}", row[1].strip("`")))
        codes = {int(code) for code in re.findall(r"\d+", row[3])}
        assert codes == documented[key], f"{row[0]} {row[1]}: docs/api.md says {codes}, openapi.yaml {documented[key]}"


def test_api_md_settings_are_the_defaults(tmp_path: Path) -> None:
    """The api.yaml shown is accepted, and but for the certificate it is what no file means."""
    text = API_MD.read_text(encoding="utf-8")
    shown = re.search(r"^```yaml\n(.*?)^```$", text, re.M | re.S)
    assert shown, "docs/api.md shows no api.yaml"
    home = WazuhHome(str(tmp_path))
    defaults = loadApiSettings(home, isMaster=True)
    assert not loadApiSettings(home, isMaster=False).enabled
    (tmp_path / "api" / "configuration").mkdir(parents=True)
    (tmp_path / "api" / "configuration" / "api.yaml").write_text(shown.group(1))
    written = loadApiSettings(home, isMaster=True)
    assert (written.enabled, written.host, written.port, written.https, written.restartCommand) == (
        defaults.enabled, defaults.host, defaults.port, defaults.https, defaults.restartCommand
    )
    assert (defaults.host, defaults.port) == ("127.0.0.1", 55000)
    assert defaults.cert is None and written.cert == str(tmp_path / "api/configuration/ssl/server.crt")


# docs/api.md's curl examples, against real nodes. ---------------------------


def examples() -> list[tuple[str, str, str, str]]:
    """
    (node, command, output language, documented output) of each ```sh block
    of docs/api.md that starts with curl; the block after it is its output.
    An HTML comment C{<!-- on: NODE -->} just before a block runs it on that
    node's API (else the master's).
    """
    text = API_MD.read_text(encoding="utf-8")
    blocks = [
        (m.start(), m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)
    ]
    found = []
    for i, (start, language, body) in enumerate(blocks):
        if language != "sh" or not body.startswith("curl "):
            continue
        assert i + 1 < len(blocks) and blocks[i + 1][1] in ("json", "text"), (
            f"the example {body.splitlines()[0]!r} has no output block (```json or ```text) after it"
        )
        marker = re.search(r"<!-- on: ([\w.-]+) -->\s*$", text[:start])
        found.append((marker.group(1) if marker else "master", body, blocks[i + 1][1], blocks[i + 1][2]))
    return found


def same_shape(documented: Any, actual: Any, where: str = "answer") -> None:
    """Objects have the same keys at every depth (lists: their first items); values may differ."""
    if isinstance(documented, dict) and isinstance(actual, dict):
        assert set(documented) == set(actual), f"{where}: documented keys {sorted(documented)}, got {sorted(actual)}"
        for key in documented:
            same_shape(documented[key], actual[key], f"{where}.{key}")
    elif isinstance(documented, list) and isinstance(actual, list) and documented and actual:
        same_shape(documented[0], actual[0], f"{where}[0]")


def start_node(node: Node, port: int) -> None:
    """Enable the node's API on C{port} with the examples' user, before it starts."""
    folder = node.home / "api" / "configuration"
    folder.mkdir(parents=True, exist_ok=True)
    # The examples restart a worker: run a harmless command instead.
    (folder / "api.yaml").write_text(f"enabled: yes\nhost: 127.0.0.1\nport: {port}\nrestart_command: [\"true\"]\n")
    ApiUsers(str(folder / "users.json")).add(USER, PASSWORD)


def test_api_md_examples_run(cluster: Cluster, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the examples of docs/api.md are curl commands")
    runs = examples()
    wanted = [
        "/cluster/status", "/cluster/nodes?pretty", "/cluster/nodes/worker1", "/cluster/healthcheck",
        "/cluster/worker1/info", "/cluster/worker1/stats", "/cluster/master/files", "-X DELETE",
        "-X POST", "/agents?", "/agents/001",
    ]
    commands = "\n".join(command for _, command, _, _ in runs)
    for piece in wanted:
        assert piece in commands, f"docs/api.md has no example with {piece!r}"

    master = cluster.master(options=FAST_OPTIONS)
    worker = cluster.worker("worker1", options=FAST_OPTIONS)
    ports = {"master": free_port(), "worker1": free_port()}
    start_node(master, ports["master"])
    start_node(worker, ports["worker1"])
    master.start().wait_ready()
    worker.start().wait_joined()
    worker.wait_ready()

    shown = {"nodes": set(), "errors": set(), "401": False, "POST files": False, "GET files": False, "DELETE files": False}
    workdir = tmp_path / "curl"
    workdir.mkdir()
    for node, command, language, documented in runs:
        run = command.replace(DOC_ADDRESS, f"127.0.0.1:{ports[node]}")
        assert run != command, f"the example does not use {DOC_ADDRESS}: {command}"
        result = subprocess.run(
            ["sh", "-c", run], cwd=workdir, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        what = f"on {node}: {command.splitlines()[0]}"
        shown["nodes"].add(node)
        assert result.returncode == 0, f"{what}\nexited {result.returncode}: {result.stderr}"
        if documented.startswith("HTTP/"):
            # An answer shown with its headers (curl -i): the status and the documented challenge.
            status = documented.split()[1]
            assert result.stdout.split()[1] == status, f"{what}\nanswered {result.stdout!r}"
            for line in documented.splitlines():
                if line.lower().startswith("www-authenticate:"):
                    assert line.lower() in result.stdout.lower(), f"{what}\nno {line!r} in {result.stdout!r}"
            shown["401"] |= status == "401"
            continue
        assert language == "json", f"{what}: a JSON answer needs a ```json block"
        try:
            actual = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"{what}\nanswered what is not JSON: {result.stdout!r}") from None
        expected = json.loads(documented)
        assert actual["error"] == expected["error"], f"{what}\nanswered {result.stdout}"
        if expected["error"]:
            assert actual["message"] == expected["message"], f"{what}\nanswered {result.stdout}"
            shown["errors"].add(expected["error"])
        same_shape(expected, actual)
        if "?pretty" in command or "&pretty" in command:
            assert result.stdout.startswith("{\n    "), f"{what}: not indented"
        for method in ("POST", "DELETE"):
            if f"-X {method}" in command and "/files" in command:
                shown[f"{method} files"] = True
        if "-X" not in command and "/files" in command and not expected["error"]:
            shown["GET files"] = True
    assert shown["nodes"] == {"master", "worker1"}, "the examples should ask both the master and a worker"
    assert shown["401"], "no example shows the answer without credentials"
    assert shown["errors"], "no example shows an error"
    assert shown["POST files"] and shown["GET files"] and shown["DELETE files"], shown
