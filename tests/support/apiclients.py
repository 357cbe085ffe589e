"""
Hostile and honest clients of the REST API, standard library only, shared by
tests/hostile and bench/api.py (which runs them against any build of the
daemon): a huge upload, slow clients, login floods, and what /proc says of
the server (descriptors, spooled bytes).

Every loop here is bounded in count and time; every socket is closed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import selectors
import socket
import time
from typing import Any


def basic(user: str, password: str) -> str:
    """The value of an HTTP Basic C{Authorization} header."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ask(port: int, method: str, path: str, body: bytes = b"", auth: tuple[str, str] | None = None,
        source: str = "127.0.0.1", timeout: float = 30.0) -> tuple[int, Any]:
    """One request on a new connection: the status and the JSON answer (or the raw bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        headers = {"Authorization": basic(*auth)} if auth else {}
        if body:
            # The files endpoints take only these, as the 3.x API does (804).
            headers["Content-Type"] = "application/octet-stream"
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        connection.close()


class Session:
    """A keep-alive connection that reconnects when the server closed it."""

    def __init__(self, port: int, auth: tuple[str, str] | None, source: str = "127.0.0.1", timeout: float = 30.0):
        self.port, self.source, self.timeout = port, source, timeout
        self.headers = {"Authorization": basic(*auth)} if auth else {}
        self.connection: http.client.HTTPConnection | None = None

    def get(self, path: str) -> int:
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout, source_address=(self.source, 0)
                )
            try:
                self.connection.request("GET", path, headers=self.headers)
                response = self.connection.getresponse()
                response.read()
                if response.will_close:
                    self.close()
                return response.status
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def huge_upload(port: int, total: int, auth: tuple[str, str] | None = None, path: str = "/cluster/master/files?path=etc/rules/huge.xml",
                limit_seconds: float = 60.0, chunk: int = 1 << 20) -> dict[str, Any]:
    """
    A POST declaring C{total} bytes, its body sent as fast as the server
    reads it until an answer comes (or all is sent, or C{limit_seconds}):
    the status, the answer, the seconds from the headers to the answer and
    the bytes sent by then.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=limit_seconds)
    started = time.monotonic()  # from the first byte of the request
    head = f"POST {path} HTTP/1.1\r\nHost: api\r\nContent-Length: {total}\r\nContent-Type: application/octet-stream\r\n"
    if auth:
        head += f"Authorization: {basic(*auth)}\r\n"
    s.sendall((head + "\r\n").encode())
    s.setblocking(False)
    data = memoryview(b"\0" * chunk)
    pending = memoryview(b"")
    sent = 0
    answer = b""
    answered: float | None = None
    selector = selectors.DefaultSelector()
    selector.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    try:
        while time.monotonic() - started < limit_seconds:
            events = selector.select(timeout=1.0)
            for _, mask in events:
                if mask & selectors.EVENT_READ:
                    try:
                        got = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        got = None
                    except OSError:
                        got = b""
                    if got:
                        answer += got
                        if answered is None:
                            answered = time.monotonic() - started
                        if b"\r\n\r\n" in answer and _complete(answer):
                            return _upload(answer, answered, sent)
                    elif got == b"":
                        return _upload(answer, answered, sent)
                if mask & selectors.EVENT_WRITE:
                    if not len(pending):
                        if sent >= total:
                            selector.modify(s, selectors.EVENT_READ)
                            continue
                        pending = data[: min(chunk, total - sent)]
                    try:
                        n = s.send(pending)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        selector.modify(s, selectors.EVENT_READ)
                        continue
                    sent += n
                    pending = pending[n:]
        return _upload(answer, answered, sent)
    finally:
        selector.close()
        s.close()


def _complete(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _upload(raw: bytes, answered: float | None, sent: int) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = body[:200]
    return {"status": status, "answer": answer, "seconds": answered, "sent": sent}


def slow_clients(port: int, sources: list[str], per_source: int, seconds: float,
                 interval: float = 1.0, sample: Any = None) -> dict[str, Any]:
    """
    Slowloris: C{per_source} connections from each address of C{sources},
    each sending its request line and then one header line every
    C{interval} seconds, for C{seconds}.  C{sample()} is called about every
    interval (to read the server's descriptors).  How many connected, how
    many the server closed, and how many were still open at the end.
    """
    selector = selectors.DefaultSelector()
    opened = closed = 0
    live: dict[socket.socket, int] = {}
    for source in sources:
        for _ in range(per_source):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((source, 0))
                s.settimeout(2.0)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /cluster/node HTTP/1.1\r\nHost: api\r\n")
            except OSError:
                s.close()
                closed += 1
                continue
            s.setblocking(False)
            opened += 1
            live[s] = 0
            selector.register(s, selectors.EVENT_READ)
    started = time.monotonic()
    nextSend = started + interval
    peak = len(live)
    try:
        while live and time.monotonic() - started < seconds:
            for key, _ in selector.select(timeout=max(0.0, nextSend - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(s)
                    live.pop(s, None)
                    s.close()
                    closed += 1
            if time.monotonic() >= nextSend:
                nextSend += interval
                for s in list(live):
                    try:
                        live[s] += 1
                        s.send(b"X-Slow-%d: x\r\n" % live[s])
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        selector.unregister(s)
                        live.pop(s, None)
                        s.close()
                        closed += 1
                if sample is not None:
                    sample()
            peak = max(peak, len(live))
        return {"opened": opened, "closed_by_server": closed, "open_at_end": len(live)}
    finally:
        for s in live:
            s.close()
        selector.close()


def open_fds(pid: int) -> int:
    """How many descriptors process C{pid} holds."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def spooled_bytes(pid: int) -> int:
    """Bytes in deleted temporary files process C{pid} holds open (request bodies spooled to disk)."""
    total = 0
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        try:
            target = os.readlink(os.path.join(folder, name))
            if target.endswith("(deleted)") and "/tmp" in target:
                total += os.stat(os.path.join(folder, name)).st_size
        except OSError:
            pass
    return total


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
