"""A real Milvus server on 127.0.0.1 for tests: the PyPI package `milvus` (2.3.5) runs Milvus's own
standalone binary, offline.

Run as a child process, so it can live in another virtualenv (`RAG_MILVUS_PYTHON`) should its pins
ever clash with the project's:

    python -m rag_assets.testing.milvus_server --base-dir DIR [--port PORT]

prints `milvus listening on http://127.0.0.1:PORT` once the server answers, and stops it when its
standard input closes (the parent finished, or died) or on SIGTERM/SIGINT. The package unpacks
about 250 MB of binaries into the base folder on every fresh one (12 s here): they are unpacked once
into a cache folder and linked from there. `MilvusServerProcess` is the parent side.
"""

import argparse
import contextlib
import fcntl
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_PREFIX = "milvus listening on "
START_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 15
# The embedded etcd's peer port: the one port the `milvus` package cannot move, so one server per
# machine at a time. A server that is still stopping (a previous session's) is waited for.
ETCD_PEER_PORT = 2380
PORT_FREE_WAIT_SECONDS = 60


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, seconds: float) -> None:
    """Return once `port` can be bound on 127.0.0.1; RuntimeError naming it after `seconds`."""
    deadline = time.monotonic() + seconds
    while not _port_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"127.0.0.1:{port} (the embedded etcd's peer port) is still taken after {seconds:.0f}s: "
                "another Milvus server runs on this machine; stop it or set RAG_TEST_MILVUS_URL to it"
            )
        time.sleep(0.5)


def binaries_cache() -> Path:
    import milvus

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "rag_assets" / f"milvus-server-{milvus.__version__}"


def link_cached_binaries(base_dir: Path) -> None:
    """Unpack the server's binaries into the cache once (under a lock), and link base_dir/bin to them."""
    import milvus

    cache = binaries_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        milvus._initialize_data_files(str(cache))  # a no-op when every file's checksum matches
    base_dir.mkdir(parents=True, exist_ok=True)
    if not (base_dir / "bin").exists():
        (base_dir / "bin").symlink_to(cache / "bin", target_is_directory=True)


def serve(base_dir: Path, port: int) -> int:
    from milvus import MilvusServer

    link_cached_binaries(base_dir)
    server = MilvusServer()
    server.set_base_dir(str(base_dir))
    if port:
        server.listen_port = port
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    try:
        server.start()
        print(f"{READY_PREFIX}http://127.0.0.1:{server.listen_port}", flush=True)
        sys.stdin.read()  # returns when the parent closes the pipe or dies
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag_assets.testing.milvus_server", description=__doc__)
    parser.add_argument("--base-dir", type=Path, required=True, help="configs, logs and data of this server")
    parser.add_argument("--port", type=int, default=0, help="gRPC/HTTP port (default: a free one)")
    args = parser.parse_args(argv)
    return serve(args.base_dir.absolute(), args.port)


class MilvusServerProcess:
    """Starts the server as a child process and stops it; `url` is what MILVUS_URI gets."""

    def __init__(self, base_dir: Path, *, python: str | None = None, port: int = 0):
        self.base_dir = Path(base_dir)
        self.python = python or os.environ.get("RAG_MILVUS_PYTHON") or sys.executable
        self.port = port
        self.url: str | None = None
        self.process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.base_dir / "runner.log"

    def log_tail(self, chars: int = 3000) -> str:
        logs = [self.log_path, self.base_dir / "logs" / "milvus-stderr.log"]
        return "\n".join(p.read_text(errors="replace")[-chars:] for p in logs if p.exists())

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> "MilvusServerProcess":
        """Start and wait until it answers; RuntimeError with the logs' tail if it does not in time."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        wait_for_port(ETCD_PEER_PORT, PORT_FREE_WAIT_SECONDS)
        command = [self.python, "-m", "rag_assets.testing.milvus_server", "--base-dir", str(self.base_dir)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONPATH": _project_path()},
                start_new_session=True,  # a Ctrl-C meant for pytest leaves it to the fixture to stop
            )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_forward_lines, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                if line.startswith(READY_PREFIX):
                    self.url = line[len(READY_PREFIX) :].strip()
                    return self
        self.stop()
        raise RuntimeError(f"the Milvus server did not start within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.process.stdout.close()
        self.process = None


def _forward_lines(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)


def _project_path() -> str:
    """This checkout first on the child's path, so another virtualenv's Python finds this module."""
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")]))


if __name__ == "__main__":
    sys.exit(main())
