from __future__ import annotations

import asyncio
import socket

import pytest

from dstack.errors import ConfigError
from dstack.server.listen import tcp_socket


def test_accepted_connections_have_nagle_off() -> None:
    async def main() -> int:
        seen: asyncio.Queue[int] = asyncio.Queue()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.put_nowait(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = tcp_socket("127.0.0.1", 0)
        server = await asyncio.start_server(on_connect, sock=listener)
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen.get(), 5)
        writer.close()
        server.close()
        await server.wait_closed()
        return value

    assert asyncio.run(main()) != 0


def test_a_taken_port_is_one_clear_error() -> None:
    taken = tcp_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            tcp_socket("127.0.0.1", port)
    finally:
        taken.close()
