"""
The shape of every API answer, as the Wazuh 3.x API gives it, and the error
catalogue with the HTTP status each kind of error gets.

Success is C{{"error": 0, "data": ...}}; failure C{{"error": CODE,
"message": "..."}}.  The HTTP status follows the 3.x API: errors of the
request itself (codes 600-899: a bad parameter, an unknown URL, a bad
content type, a file that is not valid) are HTTP 400; errors the framework
reports about what was asked (an unknown agent or node, a file that exists,
a node that does not answer) are HTTP 200 with the error in the body;
internal errors (codes 1-9) are HTTP 500.  The list filters' errors (14xx,
1724) are request errors here, so 400.  C{?pretty} indents.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

#: Wazuh 3.x error codes used here, with their messages (the 3.x texts).
MESSAGES = {
    # Internal errors: HTTP 500.
    3: "Internal error",
    # Request errors (the API's own, wazuh-api's helpers/errors.js): HTTP 400.
    600: "Param not valid. Integer expected",
    601: "Param not valid. Valid characters: a-z, A-Z, 0-9, ., _, -",
    603: "The requested URL was not found on this server",
    604: "Filter error",
    605: "Param not valid. Date format: YYYYMMDD",
    606: "Param not valid. IP invalid",
    608: "Param not valid. Path invalid. Valid characters: a-z, A-Z, 0-9, ., _, -, :, /, \\",
    609: "Param not valid. Valid characters: a-z, A-Z, 0-9, ., _, -, +",
    611: "Param not valid. Valid characters: a-z, A-Z, 0-9, _, -, +, ,",
    612: "Param not valid. Invalid characters: ; & | * ^ >",
    614: "Invalid request",
    617: "Param not valid. Valid characters: [0-9]d|[0-9]h|[0-9]m|[0-9]s|0-9",
    618: "Param not valid. Valid values: true or false",
    619: "Param not valid. Valid characters: a-z A-Z 0-9 space . , _",
    703: "Invalid XML file",
    704: "Invalid path",
    705: "Invalid CDB list",
    706: "'path' parameter is empty",
    804: "Invalid content-type for this request. Content-type should be 'application/xml' or 'application/octet-stream'",
    # Filters (the framework's utils): HTTP 400 here.
    1403: "Not a valid sort field",
    1405: "Specified limit exceeds maximum allowed (1000)",
    1406: "0 is not a valid limit",
    1407: "Query does not match expected format",
    1408: "Field does not exist.",
    1409: "Invalid query operator.",
    1724: "Not a valid select field",
    # Framework errors: HTTP 200 with the error.
    1005: "Error reading file",
    1101: "Requested component does not exist",
    1102: "Invalid section",
    1103: "Invalid field in section",
    1113: "XML syntax error",
    1307: "Invalid parameters",
    1308: "Stats file has not been created yet",
    1309: "Statistics file damaged",
    1701: "Agent does not exist",
    1703: "Action not available for Manager (Agent 000)",
    1705: "There is an agent with the same name",
    1706: "There is an agent with the same IP or the IP is invalid",
    1725: "Error registering a new agent",
    1728: "Invalid node type",
    1729: "Agent status not valid. Valid statuses are Active, Disconnected, Pending and NeverConnected",
    1730: "Node does not exist",
    1731: "Agent is not eligible for removal",
    1738: "Agent name is too long",
    1800: "Bad format in CDB list",
    1900: "Error restarting manager",
    1905: "File could not be updated, it already exists",
    1906: "File does not exist",
    1909: "Content of file is empty",
    1911: "Error parsing body request to UTF-8",
    3021: "Timeout executing API request",
    3022: "Unknown node ID",
    3023: "Worker node is not connected to master",
    # Refused before routing (the HTTP layer, api/guard.py and api/authn.py)
    # or between nodes (api/nodecalls.py).
    3030: "Node call refused",
    6000: "Limit of login attempts reached. The current IP has been blocked due to a high number of login attempts",
    6100: "Invalid credentials",
    6101: "The request did not arrive in time",
}

#: The filter errors, answered with HTTP 400 (the framework of 3.x answers 200).
FILTER_ERRORS = frozenset({1403, 1405, 1406, 1407, 1408, 1409, 1724})


#: Errors of the HTTP layer and of node calls, which always have their own status.
FIXED_STATUS = {3030: 403, 6000: 429, 6100: 401, 6101: 408}


def httpStatus(code: int) -> int:
    """
    The HTTP status of error C{code}: 500 internal, 400 request, 200
    framework; the HTTP layer's and refused node calls' their own.
    """
    if code in FIXED_STATUS:
        return FIXED_STATUS[code]
    if 1 <= code <= 9:
        return 500
    if 100 <= code <= 999 or code in FILTER_ERRORS:
        return 400
    return 200


class ApiError(Exception):
    """
    A failure to report to the client: a Wazuh error code, the code's text
    and a detail.  The HTTP status comes from the code (L{httpStatus})
    unless C{status} says otherwise (a body too large is 413).
    """

    def __init__(self, code: int, detail: str | None = None, status: int | None = None) -> None:
        message = MESSAGES.get(code, "Error")
        if detail:
            # The API's own errors join with ". ", the framework's with ": ", as 3.x does.
            if message.endswith("."):
                message = f"{message} {detail}"
            else:
                message = f"{message}. {detail}" if 100 <= code <= 999 else f"{message}: {detail}"
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = httpStatus(code) if status is None else status

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


def render(value: Mapping[str, Any], pretty: bool) -> bytes:
    """The JSON bytes of an answer."""
    if pretty:
        return (json.dumps(value, indent=4, sort_keys=False) + "\n").encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def success(data: Any) -> dict[str, Any]:
    return {"error": 0, "data": data}
