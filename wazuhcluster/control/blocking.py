"""
One AMP command to a node's control socket, without a reactor.

For short-lived command-line tools (C{manage_agents}) that ask their node
one thing and exit: a plain blocking UNIX socket, the command's own AMP
encoding, and its declared errors raised as exceptions.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.protocols import amp


def callControl(socketPath: str, command: type[amp.Command], timeout: float = 30.0, **arguments: Any) -> dict[str, Any]:
    """
    Send C{command} with C{arguments} to the control socket at
    C{socketPath} and return its answer; raise the command's declared error
    for an error answer, and C{OSError} when the node cannot be reached.
    """
    box = command.makeArguments(arguments, None)
    box[amp.COMMAND] = command.commandName
    box[amp.ASK] = b"1"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socketPath)
        s.sendall(box.serialize())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the cluster daemon closed the connection without answering")
            data += chunk
            boxes = amp.parseString(data)
            if boxes:
                break
    answer = boxes[0]
    if amp.ERROR in answer:
        code = answer.get(amp.ERROR_CODE, b"")
        description = answer.get(amp.ERROR_DESCRIPTION, b"").decode("utf-8", "replace")
        for error, errorCode in command.errors.items():
            if errorCode == code:
                raise error(description)
        raise RuntimeError(f"the cluster daemon failed: {description}")
    return command.parseResponse(answer, None)
