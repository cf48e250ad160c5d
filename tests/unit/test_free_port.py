"""``tests.support.free_port``: the port it returns is held (TIME_WAIT) against any other
bind until the server the test starts binds it by number, as ``gateway.serving.bind`` does."""

from __future__ import annotations

import errno
import socket

import pytest

from gateway.serving import bind
from tests.support import free_port


def test_the_port_is_held_for_the_server_and_from_everyone_else() -> None:
    port = free_port()
    for _ in range(20):  # a health check polling it meanwhile: refused, and the hold stays
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket() as other, pytest.raises(OSError) as refused:  # a bind that does not set SO_REUSEADDR
        other.bind(("127.0.0.1", port))
    assert refused.value.errno == errno.EADDRINUSE  # held, though nothing listens
    with bind("127.0.0.1", port) as server:  # the server's own bind goes through
        server.listen()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert free_port(port) == port  # held again for a restart on the same port
