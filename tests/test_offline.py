import socket

import pytest
from conftest import NetworkAccessForbidden


def test_network_access_is_forbidden():
    with pytest.raises(NetworkAccessForbidden):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()
