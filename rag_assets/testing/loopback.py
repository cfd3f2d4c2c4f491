"""What the loopback test servers share: a threaded HTTP/1.1 server on 127.0.0.1 that a test starts,
stops and points clients at, and that closes its keep-alive connections when it stops."""

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

HOST = "127.0.0.1"


class LoopbackServer:
    """Start/stop and the base URL; subclasses answer requests in `handle_get`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the subclass's state as well as the connection set
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None

    def handle_get(self, handler: "LoopbackHandler") -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._server = _Server((HOST, 0), LoopbackHandler)
        self._server.owner = self
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:  # keep-alive connections would otherwise hold their threads forever
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{HOST}:{self._server.server_address[1]}"


class _Server(ThreadingHTTPServer):
    owner: LoopbackServer
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that hang up are not our error
            super().handle_error(request, client_address)


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients reuse connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.owner._lock:
            self.server.owner._connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.server.owner.handle_get(self)

    @property
    def lower_headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and benchmarks read the recorded requests, not stderr
