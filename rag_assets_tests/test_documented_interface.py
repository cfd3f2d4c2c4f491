"""Every row of the README's configuration table (and of docs/evaluation.md's) and every `rag-assets`
sub-command, used the way README.md and docs/ show them: the command as a subprocess, the variable set
in its environment, paths relative to the folder it runs in. Settings that cannot work are one line
naming the variable, exit 2.

Each test starts processes that import Dagster (and some torch): marked `slow`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.instance import INSTANCE_CONFIG
from rag_assets.settings import DEFAULT_MODEL
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import SAMPLE_DOCS

pytestmark = pytest.mark.slow

# The configuration table's variables (README, "Configuration") and docs/evaluation.md's: none may leak
# in from the environment the tests run in.
DOCUMENTED = (
    "RAG_SOURCES_FILE", "RAG_DATA_DIR", "MILVUS_URI", "MILVUS_TOKEN", "MILVUS_COLLECTION", "EMBEDDING_MODEL",
    "EMBEDDING_DEVICE", "EMBEDDING_PRECISION", "GITHUB_TOKEN", "RAG_POLL_INTERVAL_SECONDS",
    "RAG_RETRY_ATTEMPTS", "RAG_RETRY_BASE_SECONDS", "RAG_RETRY_MAX_WAIT_SECONDS", "DAGSTER_CELERY_BROKER_URL",
    "DAGSTER_CELERY_BACKEND_URL", "DAGSTER_HOME", "RAG_EVAL_K", "RAG_MIN_RECALL", "RAG_EVAL_BLOCKING",
    "EMBEDDING_QUERY_PROMPT", "EMBEDDING_DOCUMENT_PROMPT", "EMBEDDING_BACKEND",
)  # fmt: skip
TIMEOUT_S = 600

# The `dagster` command of this interpreter's environment (its bin/ may not be on PATH).
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def run(command: list[str], cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """`VAR=value ... command` in `cwd`, as a user types it (the variables only, nothing inherited)."""
    env = {k: v for k, v in os.environ.items() if k not in DOCUMENTED}
    return subprocess.run(
        command, cwd=cwd, env={**env, **variables}, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def rag_assets(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "rag_assets.cli", *args], cwd, **variables)


def write_local_sources(path: Path, folder: str = "./docs", name: str = "notes") -> None:
    path.write_text(yaml.safe_dump({"sources": [{"name": name, "kind": "local", "path": folder}]}))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder like a fresh clone's: the sample docs in ./docs."""
    shutil.copytree(SAMPLE_DOCS, tmp_path / "docs")
    return tmp_path


# Each group is one process: every variable in it is wrong, and each gets its own line, in this order:
# `rag-assets: error: NAME=` and the text here.
BAD_SETTINGS = [
    {
        "RAG_DATA_DIR": ("./sources.yaml", "'./sources.yaml': is a file; expected a folder"),
        "DAGSTER_HOME": ("dagster_home", "'dagster_home': Dagster needs an absolute path"),
        "DAGSTER_CELERY_BROKER_URL": ("localhost", "'localhost': expected a URL"),
        "DAGSTER_CELERY_BACKEND_URL": ("user:pw@redis", "(hidden: it holds @)"),
        "MILVUS_URI": ("ftp://reader:s3cr3t@db/x", "'ftp://***@db/x': expected a Milvus Lite file"),
        "MILVUS_COLLECTION": ("my-docs", "'my-docs': expected a letter or _ then letters"),
        "EMBEDDING_DEVICE": ("gpu", "'gpu': expected auto, cpu, cuda or cuda:N"),
        "EMBEDDING_PRECISION": ("fp8", "'fp8': expected one of auto, fp32, bf16, fp16"),
        "EMBEDDING_QUERY_PROMPT": ("query:\x07", "'query:\\x07': expected text without control characters"),
        "EMBEDDING_DOCUMENT_PROMPT": ("p" * 1001, "(1001 characters): expected at most 1000 characters"),
        "EMBEDDING_BACKEND": ("tpu", "'tpu': expected one of torch, onnx, onnx-int8, openvino"),
        "RAG_POLL_INTERVAL_SECONDS": ("0", "'0': expected a whole number of at least 1"),
        "RAG_EVAL_K": ("0", "'0': expected a whole number of at least 1"),
        "RAG_MIN_RECALL": ("2", "'2': expected a number between 0 and 1"),
        "RAG_EVAL_BLOCKING": ("maybe", "'maybe': expected one of 1, true, yes, on, 0, false"),
        "RAG_RETRY_ATTEMPTS": ("abc", "'abc': expected a whole number of at least 1"),
        "RAG_RETRY_BASE_SECONDS": ("-1", "'-1': expected a number of at least 0"),
        "RAG_RETRY_MAX_WAIT_SECONDS": ("soon", "'soon': expected a number of at least 0"),
    },
    {
        "MILVUS_URI": ("./milvus", "'./milvus': a Milvus Lite file path must name a file ending in .db"),
        "EMBEDDING_DEVICE": ("cuda:x", "'cuda:x': expected auto, cpu, cuda or cuda:N"),
        "RAG_RETRY_ATTEMPTS": ("0", "'0': expected a whole number of at least 1"),
    },
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=["every-variable", "other-values"])
def test_settings_that_cannot_work_are_one_line_each_naming_the_variable_and_exit_2(project, bad):
    write_local_sources(project / "sources.yaml")

    result = rag_assets("ingest", cwd=project, **{name: value for name, (value, _) in bad.items()})

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(bad), result.stderr
    for line, (name, (_, expected)) in zip(lines, bad.items()):
        assert line.startswith(f"rag-assets: error: {name}={expected}"), (name, line)
    assert "s3cr3t" not in result.stderr and "pw@" not in result.stderr
    assert not (project / ".rag_assets").exists()  # nothing was done


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        (
            {"EMBEDDING_MODEL": "acme/no-such-model"},
            "rag-assets: error: EMBEDDING_MODEL='acme/no-such-model' is neither a local folder nor a model "
            "in the Hugging Face cache (models are never downloaded at run time)",
        ),
        ({"RAG_SOURCES_FILE": "missing.yaml"}, "rag-assets: error: {project}/missing.yaml"),
    ],
    ids=["model", "sources-file"],
)
def test_a_model_or_sources_file_that_is_not_there_is_one_line_and_exit_2(project, variables, line):
    write_local_sources(project / "sources.yaml")

    result = rag_assets("ingest", cwd=project, **variables)

    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(line.format(project=project))
    assert not (project / ".rag_assets" / "dagster_home").exists()


def test_preflight_stops_before_any_work_in_one_line_without_credentials(project):
    """A local folder that is not there; a CUDA device the machine lacks; a Milvus server that does
    not answer, with credentials in MILVUS_URI and MILVUS_TOKEN: none of them reaches a run."""
    write_local_sources(project / "sources.yaml", folder="./nowhere")
    (project / "ok.yaml").write_text(
        yaml.safe_dump({"sources": [{"name": "notes", "kind": "local", "path": "."}]})
    )
    import torch

    cuda = {} if torch.cuda.is_available() else {"EMBEDDING_DEVICE": "cuda"}

    folder = rag_assets("ingest", cwd=project)
    device = rag_assets("ingest", cwd=project, RAG_SOURCES_FILE="ok.yaml", **cuda) if cuda else None
    server = rag_assets(
        "ingest",
        cwd=project,
        RAG_SOURCES_FILE="ok.yaml",
        MILVUS_URI="http://reader:s3cr3t@127.0.0.1:9",
        MILVUS_TOKEN="tok-s3cr3t",
    )

    assert folder.returncode == 2 and folder.stderr.strip() == (
        f"rag-assets: error: {project / 'sources.yaml'}: source 'notes': folder {project / 'nowhere'} does "
        "not exist or is not a folder (a relative path is relative to the sources file)"
    )
    if device is not None:
        assert device.returncode == 2
        assert device.stderr.strip() == (
            "rag-assets: error: EMBEDDING_DEVICE='cuda': this machine has no CUDA device; use cpu or auto"
        )
    assert server.returncode == 2 and len(server.stderr.splitlines()) == 1, server.stderr
    assert server.stderr.startswith("rag-assets: error: Milvus at http://127.0.0.1:9 did not accept")
    assert "s3cr3t" not in server.stdout + server.stderr
    assert not (project / ".rag_assets" / "dagster_home").exists()


def test_the_readme_variables_drive_every_command_and_the_dagster_processes(project):
    """One deployment set up with the configuration table's variables, relative paths as a user types
    them, used by every `rag-assets` command, by `dagster` loading the code location, and by a run
    that `dagster asset materialize` executes in its own process."""
    write_local_sources(project / "my_sources.yaml")
    home = project / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE_CONFIG))
    variables = {
        "RAG_SOURCES_FILE": "my_sources.yaml",
        "RAG_DATA_DIR": "./state",
        "MILVUS_URI": "./lite/milvus.db",  # a Milvus Lite file path, relative (pymilvus alone refuses it)
        "MILVUS_COLLECTION": "team_docs",
        "EMBEDDING_MODEL": "sentence-transformers/all-MiniLM-L6-v2",
        "EMBEDDING_DEVICE": "cpu",
        "EMBEDDING_PRECISION": "fp32",
        "RAG_POLL_INTERVAL_SECONDS": "42",
        "RAG_RETRY_ATTEMPTS": "2",
        "RAG_RETRY_BASE_SECONDS": "0.5",
        "RAG_RETRY_MAX_WAIT_SECONDS": "3",
        "DAGSTER_HOME": str(home),
    }

    ingest = rag_assets("ingest", cwd=project, **variables)
    search = rag_assets(
        "search", "which variable points at the Milvus server?", "--json", cwd=project, **variables
    )
    listing = rag_assets("collections", cwd=project, **variables)
    prune = rag_assets("prune-collections", "--dry-run", cwd=project, **variables)
    cache = rag_assets("prune-cache", cwd=project, **variables)
    loaded = run(
        [sys.executable, "-c", "from rag_assets.definitions import defs; "
         "print(defs.get_sensor_def('github_commits_sensor').minimum_interval_seconds)"],
        project, **variables,
    )  # fmt: skip
    validate = run([DAGSTER, "definitions", "validate", "-m", "rag_assets.definitions"], project, **variables)
    materialize = run(
        [DAGSTER, "asset", "materialize", "-m", "rag_assets.definitions", "--select", "milvus_collection",
         "--partition", "notes"],
        project, **variables,
    )  # fmt: skip

    assert ingest.returncode == 0, ingest.stderr
    lite = project / "lite" / "milvus.db"
    assert f"collection 'team_docs' at {lite}" in ingest.stdout
    assert lite.exists() and not (project / "state" / "milvus.db").exists()
    assert (project / "state" / "artifacts").is_dir() and not (project / "state" / "dagster_home").exists()
    # Not a terminal: a plain progress line per step at its end.
    assert (
        "embeddings: 18 / 18 chunks" in ingest.stderr
        and "milvus_collection: 18 / 18 rows written" in ingest.stderr
    )
    assert search.returncode == 0, search.stderr
    assert '"path": "configuration.md"' in search.stdout
    assert listing.returncode == 0 and f"serving name 'team_docs' at {lite}" in listing.stdout
    assert "*+ team_docs__all_minilm_l6_v2_" in listing.stdout and "18 rows" in listing.stdout
    assert prune.returncode == 0 and "0 collection(s) would drop" in prune.stdout
    assert cache.returncode == 0 and "kept 18 vectors, removed 0" in cache.stdout
    assert loaded.returncode == 0 and loaded.stdout.strip() == "42", loaded.stderr
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert materialize.returncode == 0, materialize.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:  # DAGSTER_HOME held every run
        embedded = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("embeddings"), asset_partitions=["notes"]), limit=1
        ).records[0]
        written = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("milvus_collection"), asset_partitions=["notes"]),
            limit=2,
        ).records
    meta = {k: v.value for k, v in embedded.asset_materialization.metadata.items()}
    assert (meta["device"], meta["precision"]) == ("cpu", "fp32")
    assert len(written) == 2 and written[0].asset_materialization.metadata["rows_unchanged"].value == 18


def test_prompt_variables_make_their_own_collection_and_search_embeds_with_the_served_ones(project):
    """`EMBEDDING_QUERY_PROMPT=... EMBEDDING_DOCUMENT_PROMPT=... rag-assets ingest`, then search: the
    prompts are recorded on a collection of their own, and a search without the variables still
    embeds its question with the prompt of the collection it searches."""
    write_local_sources(project / "sources.yaml")
    prompts = {"EMBEDDING_QUERY_PROMPT": "query: ", "EMBEDDING_DOCUMENT_PROMPT": "passage: "}
    plain = {"EMBEDDING_PRECISION": "fp32", "RAG_DATA_DIR": "./plain"}

    first = rag_assets("ingest", cwd=project, **plain)
    prompted = rag_assets("ingest", cwd=project, EMBEDDING_PRECISION="fp32", **prompts)
    search = rag_assets("search", "which variable points at the Milvus server?", "--json", cwd=project)

    assert first.returncode == 0 and prompted.returncode == 0, first.stderr + prompted.stderr
    names = [
        line.partition("-> ")[2].strip()
        for output in (first.stdout, prompted.stdout)
        for line in output.splitlines()
        if line.startswith("serving")
    ]
    assert len(names) == 2 and names[0] != names[1] and names[0].startswith("rag_chunks__all_minilm_l6_v2_")
    store = MilvusStore(str(project / ".rag_assets" / "milvus.db"), "rag_chunks")
    try:
        properties = store.client.describe_collection("rag_chunks")["properties"]
    finally:
        store.close()
    assert (properties["rag_assets.query_prompt"], properties["rag_assets.document_prompt"]) == (
        '"query: "',
        '"passage: "',
    )
    assert search.returncode == 0, search.stderr
    assert '"path": "configuration.md"' in search.stdout


def test_embedding_backend_builds_its_collection_from_an_export_in_the_data_directory(project):
    """`EMBEDDING_BACKEND=onnx-int8 rag-assets ingest`, then search and list with the same variable: the
    int8 export is made once under RAG_DATA_DIR, the backend is recorded on a collection of its own."""
    write_local_sources(project / "sources.yaml")

    ingest = rag_assets("ingest", cwd=project, EMBEDDING_BACKEND="onnx-int8")
    exports = sorted((project / ".rag_assets" / "cache" / "exports").rglob("*.onnx"))
    made = {path: path.stat().st_mtime_ns for path in exports}
    again = rag_assets("ingest", "--force", cwd=project, EMBEDDING_BACKEND="onnx-int8")
    search = rag_assets("search", "which variable points at the Milvus server?", "--json", cwd=project)
    listing = rag_assets("collections", cwd=project, EMBEDDING_BACKEND="onnx-int8")

    assert ingest.returncode == 0 and again.returncode == 0, ingest.stderr + again.stderr
    assert [p.name for p in exports] == ["model.onnx", "model_int8.onnx"]
    assert {path: path.stat().st_mtime_ns for path in exports} == made  # the second run read them
    assert search.returncode == 0 and '"path": "configuration.md"' in search.stdout, search.stderr
    served = [line for line in listing.stdout.splitlines() if line.startswith("*+")]
    assert len(served) == 1 and "rag_chunks__all_minilm_l6_v2_" in served[0]
    assert "a683a6d1843b7e38" not in served[0]  # not torch's collection: the backend is in the identity


def test_a_backend_whose_extra_is_missing_is_one_line_naming_the_extra(project):
    """`EMBEDDING_BACKEND=onnx-int8 rag-assets ingest` where the `[onnx]` extra is not installed (hidden
    from this interpreter: the test environment has it), and the same for `openvino`."""
    write_local_sources(project / "sources.yaml")
    hide = (
        "import sys; [sys.modules.__setitem__(m, None) for m in ('onnxruntime', 'onnx', 'openvino')]; "
        "from rag_assets.cli import main; sys.exit(main(['ingest']))"
    )

    results = {
        backend: run([sys.executable, "-c", hide], project, EMBEDDING_BACKEND=backend)
        for backend in ("onnx-int8", "openvino")
    }

    for backend, extra in (("onnx-int8", "onnx"), ("openvino", "openvino")):
        result = results[backend]
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(
            f"rag-assets: error: EMBEDDING_BACKEND='{backend}': needs the [{extra}] extra"
        ), result.stderr
    assert not (project / ".rag_assets" / "dagster_home").exists()


def test_a_failed_run_is_one_line_per_source_with_its_step_what_to_do_and_the_log_file(project):
    """GitHub answers 503 to every tarball download: with RAG_RETRY_ATTEMPTS=2 and GITHUB_TOKEN set,
    the run fails after two tries; the user sees one line, the trace is in the log file it names."""
    token = "ghp_interfaceTestToken0123456789abcdefAB"
    with FakeGitHub() as github:
        github.required_token = token
        github.add_repo("acme/frob", {"docs/index.md": "# Frob\n\nIt frobs.\n"})
        github.fail_next("/tarball/", [503] * 10)
        source = {"name": "frob", "kind": "github", "repo": "acme/frob", "api_url": github.url}
        (project / "sources.yaml").write_text(yaml.safe_dump({"sources": [source]}))

        failed = rag_assets(
            "ingest", cwd=project, GITHUB_TOKEN=token, RAG_RETRY_ATTEMPTS="2", RAG_RETRY_BASE_SECONDS="0"
        )
        tarball_tries = github.count("/tarball/")

    assert failed.returncode == 1, failed.stderr
    assert tarball_tries == 2
    [line] = failed.stderr.splitlines()
    assert line.startswith("rag-assets: source 'frob': step raw_pages failed: source 'frob': ")
    assert "gave up after 2 tries; last answer: HTTP 503" in line
    assert "Check that the service answers" in line and "Traceback" not in failed.stdout + failed.stderr
    log_file = Path(line.rpartition(" Log: ")[2])
    trace = log_file.read_text()  # the step's events and the error's stack, frame by frame
    assert log_file.parent == project / ".rag_assets" / "logs"
    assert "raw_pages" in trace and 'File "' in trace and "RetryError" in trace
    assert token not in failed.stdout + failed.stderr + trace


def test_a_search_while_another_process_holds_the_lite_file_is_one_line(project):
    lite = project / "milvus.db"
    holder = MilvusStore(str(lite), "rag_chunks")  # this process holds the file, as an ingest would
    try:
        result = rag_assets("search", "anything", cwd=project, MILVUS_URI="milvus.db")
    finally:
        holder.close()

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rag-assets: error: Milvus Lite file {lite} is open in another process (an ingest, a search or a "
        "Dagster run); Lite admits one process per file: try again when it is done, or use a Milvus "
        "server (MILVUS_URI=http://host:19530) for concurrent readers"
    )


def test_ingest_refuses_before_any_work_a_collection_of_this_model_with_another_dimension(project):
    from rag_assets.resources.milvus import MilvusResource

    write_local_sources(project / "sources.yaml")
    lite = project / ".rag_assets" / "milvus.db"
    name = MilvusResource(uri=str(lite), collection="rag_chunks", model=DEFAULT_MODEL).model_collection
    store = MilvusStore(str(lite), name)
    try:
        store.ensure_collection(8)  # made by something else, for 8-dimensional vectors
    finally:
        store.close()

    result = rag_assets("ingest", cwd=project)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rag-assets: error: Milvus collection {name!r} holds 8-dimensional vectors but "
        f"EMBEDDING_MODEL={DEFAULT_MODEL!r} gives 384: set MILVUS_COLLECTION to a new name, or drop that "
        "collection"
    )
    assert not (project / ".rag_assets" / "dagster_home").exists()
