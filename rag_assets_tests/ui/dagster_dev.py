"""`dagster dev` as a test fixture: a temp instance, a free port, GraphQL, and a shutdown that leaves nothing.

The process is started in its own session (so its process group is everything it starts: webserver,
daemon, code servers, run workers) with SIGINT and SIGTERM restored to their defaults: a process
started from a non-interactive shell inherits "ignore" for both, and `dagster dev` would then only
die to SIGKILL, orphaning its children. Shutdown is SIGINT to the group (dagster dev's own clean
stop), then SIGTERM, then SIGKILL, then SIGKILL for any process left that carries this instance's
DAGSTER_HOME in its environment.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = (20, 10, 5)  # after SIGINT, SIGTERM, SIGKILL

ASSET_NODES_QUERY = "{ assetNodes { assetKey { path } } }"
LOCATIONS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""
RUN_STATUS_QUERY = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _restore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class DagsterDev:
    """One `dagster dev -w workspace.yaml` on 127.0.0.1, run from the repository root."""

    def __init__(
        self,
        *,
        home: Path,
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
        command: list[str] | None = None,
        cwd: Path = REPO,
        stderr_path: Path | None = None,
    ):
        """`command` replaces `python -m dagster dev ...` (e.g. `rag-assets ui --port PORT`, which finds
        its instance itself: DAGSTER_HOME is then not set, and `home` is where it is expected); stderr goes
        to `stderr_path` when given, else into the log."""
        self.home = home
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        if command is None:
            self.env["DAGSTER_HOME"] = str(home)
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def start(self) -> "DagsterDev":
        command = self.command or [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        with open(self.log_path, "wb") as log, open(self.stderr_path or os.devnull, "wb") as errors:
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=errors if self.stderr_path else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_restore_signals,
            )
        return self

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_until(self, what: str, probe: Callable[[], object], timeout: float, interval: float = 1.0):
        """Poll `probe` until it returns something truthy; fail with the log's tail if dagster dev died."""
        deadline, last_error = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise AssertionError(
                    f"dagster dev exited ({self.process.returncode}) while waiting for "
                    f"{what}:\n{self.log_tail()}"
                )
            try:
                if value := probe():
                    return value
            except (httpx.HTTPError, RuntimeError, KeyError, TypeError) as error:
                last_error = error
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what} (last error: "
            f"{last_error}):\n{self.log_tail()}"
        )

    def wait_ready(self, asset_names: set[str], timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until the webserver answers and the code location has loaded with these assets."""

        def loaded():
            for entry in self.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]:
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise AssertionError(f"code location {entry['name']} failed to load: {error['message']}")
            names = {"/".join(n["assetKey"]["path"]) for n in self.graphql(ASSET_NODES_QUERY)["assetNodes"]}
            return asset_names <= names

        self.wait_until("the UI and the code location", loaded, timeout)

    def runs(self) -> list[dict]:
        """Every run on the instance: runId, status and tags (a dict)."""
        runs = self.graphql(RUNS_QUERY)["runsOrError"]["results"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in runs]

    def wait_for_run_end(self, run_id: str, timeout: float) -> str:
        """The run's terminal status (SUCCESS, FAILURE or CANCELED)."""
        status = lambda: self.graphql(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]["status"]  # noqa: E731
        return self.wait_until(
            f"run {run_id} to finish", lambda: (s := status()) in TERMINAL_STATUSES and s, timeout
        )

    def signal_and_wait(self, sig: int, timeout: float) -> list[int]:
        """Send `sig` to dagster dev alone (as a supervisor would) and wait until its whole process group
        has exited; returns the pids still alive at the deadline (none: it stopped cleanly)."""
        group = self.process.pid
        os.kill(group, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _live_members(group):
            self._reap()
            time.sleep(0.2)
        self._reap()
        return _live_members(group)

    def stop(self) -> list[int]:
        """Stop the whole process group; return the pids that had to be killed outside it (should be none)."""
        if self.process is None:
            return []
        group = self.process.pid  # start_new_session: the group id is the leader's pid
        for sig, grace in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), STOP_GRACE_SECONDS):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _live_members(group):
                self._reap()
                time.sleep(0.2)
            if not _live_members(group):
                break
        self._reap()
        strays = [pid for pid in _pids_with_env(f"DAGSTER_HOME={self.home}") if pid != os.getpid()]
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return strays

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=0)
        except subprocess.TimeoutExpired:
            pass


def _proc_entries():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield entry


def _live_members(group: int) -> list[int]:
    """Pids in the process group that are not zombies (Linux /proc; elsewhere: whether any is left)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(group, 0)
            return [group]
        except ProcessLookupError:
            return []
    members = []
    for entry in _proc_entries():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid == group and state != "Z":
            members.append(int(entry.name))
    return members


def _pids_with_env(assignment: str) -> list[int]:
    needle = assignment.encode() + b"\0"
    found = []
    for entry in _proc_entries() if Path("/proc/self/environ").exists() else ():
        try:
            environ = (entry / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in b"\0" + environ:
            found.append(int(entry.name))
    return found
