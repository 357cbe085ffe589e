"""
The shape of every API answer, as the Wazuh 3.x API gives it, and the list
parameters every list endpoint takes.

Success is C{{"error": 0, "data": ...}}; failure C{{"error": CODE,
"message": "..."}} with an HTTP status that says what kind of failure it
is (400 for a bad request, 404 for something that does not exist).  Lists
are C{{"totalItems": N, "items": [...]}} and take C{offset}, C{limit}
(default 500), C{sort} (C{+field} / C{-field}, several separated by commas),
C{search} (a substring of any field; C{-text} for those without it) and
C{select} (the fields to keep).  C{?pretty} indents.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

#: Wazuh's error codes used here, with their messages.
MESSAGES = {
    600: "Invalid parameter",
    603: "The requested URL was not found on this server",
    604: "The requested method is not allowed for this URL",
    605: "The request body is not valid JSON, or lacks a field",
    614: "Invalid request",
    703: "The XML file is not valid",
    704: "Only files under etc/rules, etc/decoders and etc/lists can be read, written or deleted",
    705: "The CDB list is not valid",
    1000: "Internal error",
    1005: "The file does not exist",
    1905: "File could not be updated, it already exists; use overwrite=true to replace it",
    1403: "Not a valid sort field",
    1406: "0 is an invalid value for parameter limit",
    1701: "Agent does not exist",
    1702: "The agent could not be registered",
    1703: "The agent could not be removed",
    1724: "Not a valid select field",
    1728: "Invalid node type",
    1730: "Node does not exist",
    1750: "The restart command could not be run",
    3021: "The node did not answer in time",
    3022: "Unknown node ID",
    3023: "The worker is not connected to the master",
    # Refused before routing (the HTTP layer, api/guard.py and api/authn.py)
    # or between nodes (api/nodecalls.py).
    3030: "Node call refused",
    6000: "Limit of login attempts reached. The current IP has been blocked due to a high number of login attempts",
    6100: "Invalid credentials",
    6101: "The request did not arrive in time",
}


class ApiError(Exception):
    """A failure to report to the client: a Wazuh error code and an HTTP status."""

    def __init__(self, code: int, detail: str | None = None, status: int = 400) -> None:
        message = MESSAGES.get(code, "Error")
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


def render(value: Mapping[str, Any], pretty: bool) -> bytes:
    """The JSON bytes of an answer."""
    if pretty:
        return (json.dumps(value, indent=4, sort_keys=False) + "\n").encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def success(data: Any) -> dict[str, Any]:
    return {"error": 0, "data": data}


#: The default page size of lists.
DEFAULT_LIMIT = 500


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(600, f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ApiError(600, f"{name} must not be negative")
    return value


def listOf(
    items: Sequence[Mapping[str, Any]], query: Mapping[str, str], fields: Sequence[str]
) -> dict[str, Any]:
    """
    The page of C{items} the list parameters in C{query} ask for, as
    C{{"totalItems", "items"}}; C{fields} are the fields an item may have
    (for C{sort} and C{select}).
    """
    offset = _integer(query, "offset", 0)
    limit = _integer(query, "limit", DEFAULT_LIMIT)
    if "limit" in query and limit == 0:
        raise ApiError(1406)
    chosen = list(items)
    search = query.get("search")
    if search:
        negate = search.startswith("-")
        needle = (search[1:] if negate else search).lower()
        chosen = [
            item for item in chosen
            if negate != any(needle in _text(value).lower() for value in item.values())
        ]
    sort = query.get("sort")
    if sort:
        keys = [k.strip() for k in sort.split(",") if k.strip()]
        for key in reversed(keys):
            descending = key.startswith("-")
            field = key.lstrip("+-").strip()
            if field not in fields:
                raise ApiError(1403, f"{field!r}; sort by one of {', '.join(fields)}")
            chosen.sort(key=lambda item: _sortKey(item.get(field)), reverse=descending)
    total = len(chosen)
    page = chosen[offset : offset + limit]
    select = query.get("select")
    if select:
        wanted = [f.strip() for f in select.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in fields]
        if unknown:
            raise ApiError(1724, f"{', '.join(unknown)}; choose among {', '.join(fields)}")
        page = [{f: item.get(f) for f in wanted} for item in page]
    return {"totalItems": total, "items": page}


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)


def _sortKey(value: Any) -> tuple[int, Any]:
    # Numbers before text, None last; never compares a number with a string.
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, _text(value).lower())
