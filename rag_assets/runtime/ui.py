"""`rag-assets ui`: `dagster dev` on the instance `rag-assets ingest` uses, in one command, from any folder.

- The instance is the CLI's (`instance.instance_home`: $DAGSTER_HOME, else $RAG_DATA_DIR/dagster_home),
  created with its pools when it does not exist yet, so the UI opens before the first ingest too.
- `dagster dev` runs with that folder as its working directory: Dagster then reads the instance's
  own dagster.yaml and has no other dagster.yaml to warn about (the project folder's is an example
  to copy). Path settings relative to where the command was typed are made absolute first, so the
  code location sees the same files as `rag-assets ingest`.
- This process becomes `dagster dev` (exec), with SIGINT and SIGTERM at their defaults: a shell
  that started it in the background may have set them to "ignore", and `dagster dev` stops cleanly
  (webserver, daemon, code servers) on either only when they are not ignored.
"""

import os
import signal
import sys
from pathlib import Path

import yaml

from rag_assets.runtime.instance import cli_instance, instance_home
from rag_assets.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
WORKSPACE_FILE = "workspace.yaml"
WORKSPACE = {
    "load_from": [{"python_module": {"module_name": "rag_assets.definitions", "location_name": "rag_assets"}}]
}
# `dagster dev` warns that it is superseded by `dg dev`, which needs a `dg` project layout; this
# command is the supported way to open the UI here.
SUPERSEDED_WARNING = "ignore:Function `dev_command` is superseded"


def ui_workspace(home: Path, workspace: Path | None) -> Path:
    """The workspace file: the one given, else ./workspace.yaml, else one written into the instance folder."""
    if workspace is not None:
        if not workspace.is_file():
            raise FileNotFoundError(f"workspace file {workspace} does not exist")
        return workspace.absolute()
    if Path(WORKSPACE_FILE).is_file():
        return Path(WORKSPACE_FILE).absolute()
    generated = home / WORKSPACE_FILE
    generated.write_text(yaml.safe_dump(WORKSPACE, sort_keys=False))
    return generated


def ui_environment(settings: Settings, home: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with every path setting absolute: `dagster dev` runs in the instance folder."""
    ui_env = {
        **env,
        "DAGSTER_HOME": str(home),
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_SOURCES_FILE": str(settings.sources_file),
    }
    uri = env.get("MILVUS_URI", "")
    if uri and "://" not in uri:  # a Milvus Lite file path
        ui_env["MILVUS_URI"] = str(Path(uri).expanduser().absolute())
    model = env.get("EMBEDDING_MODEL", "")
    if model and not Path(model).is_absolute() and Path(model).is_dir():  # a local model folder
        ui_env["EMBEDDING_MODEL"] = str(Path(model).absolute())
    return ui_env


def dagster_dev_command(workspace: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-W",
        SUPERSEDED_WARNING,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(workspace),
        "-h",
        host,
        "-p",
        str(port),
    ]


def run_ui(settings: Settings, *, host: str, port: int, workspace: Path | None) -> None:
    """Prepare the instance and become `dagster dev` on it; returns only if the exec fails."""
    home = instance_home(settings)
    cli_instance(settings).dispose()  # storage and pools exist before webserver and daemon start
    workspace_file = ui_workspace(home, workspace)
    env = ui_environment(settings, home, dict(os.environ))
    print(
        f"rag-assets: the UI at http://{host}:{port} on the instance in {home} (Ctrl-C stops it)", flush=True
    )
    os.chdir(home)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    command = dagster_dev_command(workspace_file, host, port)
    os.execve(command[0], command, env)
