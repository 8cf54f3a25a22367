"""A minimal, cheap WebSocket client (RFC 6455) as an asyncio protocol, for subscribers.

Why not the ``websockets`` library: with 1,000-row frames the first runs were limited by the
subscriber processes (about 7,000 frames/s per process, the servers mostly idle), which
measures the client, not the server. This protocol parses frames straight out of the bytes
received, with no per-frame task, queue or copy: a process then takes several times more
frames per second, and the servers become the bottleneck, as a server benchmark wants.

It does what a subscriber needs and nothing more: the opening handshake, unmasked frames
from the server (text, binary, ping, close; no fragmentation, which Tornado does not send),
and masked text frames to the server (``send_text``, pongs, the close reply).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["WSClient", "connect", "handshake", "masked", "upgrade_request"]

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """``payload`` as one masked client frame (a text frame unless ``opcode`` says else)."""
    key = os.urandom(4)
    n = len(payload)
    # XOR with the key repeated, as one big-int operation (fast for short control frames).
    rep = (key * (n // 4 + 1))[:n]
    data = (int.from_bytes(payload, "little") ^ int.from_bytes(rep, "little")).to_bytes(n, "little")
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + data


def upgrade_request(host: str, port: int, path: str, headers: str = "") -> bytes:
    """The client's opening handshake request (``headers``: more lines, each ending in
    CRLF)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\n{headers}"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def handshake(sock: socket.socket, host: str, port: int, path: str, headers: str = "") -> None:
    """The opening handshake on a connected blocking socket. The answer is read byte by
    byte, not one byte past it (what follows is the server's first frames, left in the
    socket); ``ConnectionError`` unless it is ``101``."""
    sock.sendall(upgrade_request(host, port, path, headers))
    response = b""
    for _ in range(65536):
        if response.endswith(b"\r\n\r\n"):
            break
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the server closed the connection during the handshake")
        response += chunk
    status = response.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise ConnectionError(f"handshake refused: {status!r}")


class WSClient(asyncio.Protocol):
    """Calls ``on_binary(bytes)`` and ``on_text(str)`` for each message received."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        on_binary: Callable[[bytes], None],
        on_text: Callable[[str], None],
        headers: str = "",
    ) -> None:
        self.request = upgrade_request(host, port, path, headers)
        self.on_binary = on_binary
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            at = pos + 2
            if n == 126:
                if size - at < 2:
                    break
                (n,) = _U16.unpack_from(buf, at)
                at += 2
            elif n == 127:
                if size - at < 8:
                    break
                (n,) = _U64.unpack_from(buf, at)
                at += 8
            if size - at < n:
                break
            opcode = b0 & 0x0F
            payload = bytes(buf[at : at + n])
            pos = at + n
            if opcode == 0x2:
                self.on_binary(payload)
            elif opcode == 0x1:
                self.on_text(payload.decode())
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self._send(0x8, payload[:2])
                assert self.transport is not None
                self.transport.close()
                break
        if pos:
            del buf[:pos]

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked(payload, opcode))

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x8, struct.pack("!H", 1000))
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str,
    on_binary: Callable[[bytes], None],
    on_text: Callable[[str], None],
    timeout: float = 30.0,
    headers: str = "",
) -> WSClient:
    """Open a WebSocket and complete the handshake (bounded by ``timeout``). ``headers``:
    extra request header lines, each ending with CRLF (e.g. a ``Sec-WebSocket-Protocol``)."""
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: WSClient(host, port, path, on_binary, on_text, headers), host, port
        ),
        timeout,
    )
    await asyncio.wait_for(proto.opened, timeout)
    return proto
