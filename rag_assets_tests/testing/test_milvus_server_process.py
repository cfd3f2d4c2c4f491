"""The Milvus server runner's one fixed port: a start waits for it, then says who holds it."""

import socket
import threading

import pytest

from rag_assets.testing.milvus_server import wait_for_port


def test_a_taken_port_is_waited_for_then_named_in_one_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} .* still taken after 0s"):
            wait_for_port(port, 0.2)


def test_a_port_freed_while_waiting_is_taken():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    threading.Timer(0.3, holder.close).start()  # a previous server that finishes stopping

    wait_for_port(port, 10)  # returns, no error

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # really free now
