"""
Strangers on the cluster port: clients that complete TLS with a master and
never prove the cluster key, written with the standard library only (no
Twisted, no project code), so that a test or a benchmark can point them at
any build of the daemon.

Each client binds its own source address when asked (C{127.0.0.2},
C{127.0.0.3}, ...: the whole of 127.0.0.0/8 reaches the loopback on Linux),
so the master sees distinct peers.  Every call is bounded in time.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Iterator

#: What an AMP key or value's length prefix is.
_LENGTH = struct.Struct("!H")

#: The longest value AMP allows, and the keys the project allowed in a box.
AMP_MAX_VALUE = 0xFFFF
AMP_MAX_KEYS = 64


def source_addresses(count: int) -> list[str]:
    """C{count} loopback addresses other than 127.0.0.1: 127.0.0.2 to .254, then 127.0.1.2, ..."""
    return [f"127.0.{n // 253}.{n % 253 + 2}" for n in range(count)]


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_CONTEXT = _context()


def connect(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 10.0) -> ssl.SSLSocket:
    """A TLS connection to the master at C{host:port} from C{source}, handshake done."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.bind((source, 0))
        raw.connect((host, port))
        return _CONTEXT.wrap_socket(raw, server_hostname=None)
    except BaseException:
        raw.close()
        raise


def box(values: dict[bytes, bytes]) -> bytes:
    """A whole AMP box."""
    out = b""
    for key, value in values.items():
        out += _LENGTH.pack(len(key)) + key + _LENGTH.pack(len(value)) + value
    return out + _LENGTH.pack(0)


def authenticate_without_nonce(ask: bytes = b"1") -> bytes:
    """A pre-proof Authenticate that lacks its one argument (issue 12, item 7)."""
    return box({b"_command": b"Authenticate", b"_ask": ask})


def unterminated_box(total: int) -> Iterator[bytes]:
    """
    Pieces of one AMP box that never ends: keys of 64 KiB values, up to
    C{total} bytes or AMP's 64 keys, in pieces of at most 64 KiB.
    """
    sent = 0
    for index in range(AMP_MAX_KEYS):
        if sent >= total:
            return
        key = b"k%d" % index
        header = _LENGTH.pack(len(key)) + key + _LENGTH.pack(AMP_MAX_VALUE)
        yield header + b"\0" * 16
        yield b"\xa5" * (AMP_MAX_VALUE - 16)
        sent += len(header) + AMP_MAX_VALUE


def closed_by_peer(sock: ssl.SSLSocket, timeout: float) -> bool:
    """Whether the master closes C{sock} within C{timeout} seconds (what it sends is read and dropped)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            if not sock.recv(4096):
                return True
    except (TimeoutError, socket.timeout):
        return False
    except (OSError, ssl.SSLError):
        return True


def send_piece(sock: ssl.SSLSocket, data: bytes, timeout: float) -> bool:
    """Send C{data}; whether the connection is still open after it."""
    try:
        sock.settimeout(timeout)
        sock.sendall(data)
        return True
    except (TimeoutError, socket.timeout):
        return True  # the master stopped reading (its buffers are full): still open
    except (OSError, ssl.SSLError):
        return False


def close(sock: ssl.SSLSocket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def process_memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, USS) of process C{pid} in kB, from /proc (USS: private clean and dirty)."""
    rss = uss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss += int(line.split()[1])
    return rss, uss
