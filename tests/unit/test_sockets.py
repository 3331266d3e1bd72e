"""Listening sockets: what accepted connections inherit from them."""

from __future__ import annotations

import socket

from forklift import sockets
from forklift.config import PROTOCOL_HTTP, parse_address


def test_accepted_tcp_connections_have_nodelay_from_the_listener():
    # The worker no longer sets TCP_NODELAY per connection (one system call each): the
    # listener's setting must reach every accepted socket, or small answers wait for Nagle.
    listener = sockets.bind(parse_address("127.0.0.1:0", PROTOCOL_HTTP, "--http"))
    try:
        listener.sock.setblocking(True)
        client = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        server_side, _ = listener.sock.accept()
        with client, server_side:
            assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sockets.close_all([listener])
