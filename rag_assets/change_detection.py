"""Whether a source changed since its last successful `rag-assets ingest`, decided without Dagster.

A run of an unchanged source fetches nothing new, embeds nothing and writes nothing, but still
costs the imports, the definitions, the model's metadata and a step per asset. So before it
launches a run, the CLI fingerprints each source: everything the source's rows depend on (the
source's definition, the settings that shape rows and evaluation, the model files, the user's
query file) and its content (a local folder: every selected file's bytes; GitHub: the commit the
ref resolves to). A source whose fingerprint equals the one recorded after its last successful CLI
run is skipped: no run, no materialization, so the UI keeps showing that run's materializations,
which are still true.

The record (`<artifacts>/ingest_state/<source>.json`) is written only after a successful run and
is erased by any run that materializes the source's `raw_pages` (from the CLI, the UI or a sensor)
and by the source's cleanup: whatever else changed the rows, the next CLI run is a full one.
Web sources are never skipped here: their validators are checked page by page by the run itself.

Grain: one source. Invariant: a skip happens only when the inputs of the last successful run are
byte for byte the inputs of this one.
"""

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rag_assets.core.artifacts import ArtifactStore
from rag_assets.core.hashing import content_hash
from rag_assets.core.local_folder import stat_key
from rag_assets.core.names import portable_name
from rag_assets.core.source_store import KnownPage

STATE_FOLDER = "ingest_state"
FORMAT = 2  # bump when the fingerprint's recipe changes: every source then runs once more


@dataclass(frozen=True)
class Unchanged:
    """A source skipped because nothing it depends on changed since `recorded_at`."""

    source: str
    recorded_at: float
    counts: dict

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.recorded_at))
        pages, chunks = self.counts.get("pages", "?"), self.counts.get("chunks", "?")
        return f"{self.source}: unchanged since the run of {when} ({pages} pages, {chunks} chunks): skipped"


def state_path(artifacts_dir: Path | str, source: str) -> Path:
    return Path(artifacts_dir, STATE_FOLDER, f"{source}.json")


def forget(artifacts_dir: Path | str, source: str) -> bool:
    """Erase a source's record, so its next CLI ingest runs in full; True when there was one."""
    try:
        state_path(artifacts_dir, source).unlink()
        return True
    except FileNotFoundError:
        return False


def record(artifacts_dir: Path | str, source: str, fingerprint: str, counts: dict) -> None:
    """After a successful run: the fingerprint its inputs had, and what it produced (for the skip line)."""
    path = state_path(artifacts_dir, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"fingerprint": fingerprint, "recorded_at": time.time(), "counts": counts}))
    os.replace(partial, path)


def stored_sources(artifacts_dir: Path | str) -> set[str]:
    """Sources something is stored for on disk (a record or a raw_pages artefact): without a Dagster
    import, the no-op path can tell whether a source taken out of the sources file still needs removing.
    """
    folder = Path(artifacts_dir, STATE_FOLDER)
    recorded = {p.name.split(".")[0] for p in folder.iterdir()} if folder.is_dir() else set()
    return recorded | ArtifactStore(Path(artifacts_dir)).sources("raw_pages")


def recorded(artifacts_dir: Path | str, source: str) -> dict | None:
    try:
        state = json.loads(state_path(artifacts_dir, source).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return state if isinstance(state, dict) and "fingerprint" in state else None


def folder_digest(
    root: Path, selected: Callable[[str], bool], known: Mapping[str, KnownPage] | None = None
) -> str:
    """A digest over the relative path and content hash of every selected file under root, in path order.

    A superset of what raw_pages reads (limits, symlinks and binary files are decided from these
    same bytes and the source's definition), so any change raw_pages could see changes the digest;
    content, not modification times, so an edit that keeps the mtime is still seen. A file whose
    stat (size, times, inode: core/local_folder.stat_key) is the one the source store recorded is
    not read: its stored hash stands in, so the no-op of a large folder costs a walk and a stat per
    file, not a read of every byte (the change time moves on any write, even one that restores the
    modification time)."""
    digest = hashlib.sha256()
    root = Path(root)
    if not root.is_dir():
        return "missing"
    paths = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        paths += [Path(folder, name) for name in files]
    for path in sorted(paths):
        relative = path.relative_to(root).as_posix()
        if not selected(portable_name(relative)):  # selected as raw_pages selects: by the stored name
            continue
        digest.update(os.fsencode(relative) + b"\0")  # the bytes on disk: any name, one digest
        try:
            page = (known or {}).get(portable_name(relative))
            if page is not None and page.stat and page.stat == stat_key(path):
                digest.update(page.content_hash.encode())
            else:
                digest.update(content_hash(path.read_bytes()).encode())
        except OSError as error:  # unreadable now: raw_pages decides what that means
            digest.update(f"error:{type(error).__name__}".encode())
    return digest.hexdigest()


def model_signature(model_dir: Path) -> list:
    """Names, sizes and modification times of the model's files: a changed model is a new fingerprint
    (cheap: hashing the weights is the embedding step's work)."""
    return sorted(
        (p.relative_to(model_dir).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in Path(model_dir).rglob("*")
        if p.is_file()
    )


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(
        json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()
    ).hexdigest()


def split_unchanged(
    artifacts_dir: Path | str, names: list[str], current: dict[str, str | None]
) -> tuple[list[Unchanged], list[str]]:
    """(skipped, to run): a source is skipped when its current fingerprint is the recorded one.
    `current[name]` None means "cannot tell without running" (a website)."""
    skipped, run = [], []
    for name in names:
        state = recorded(artifacts_dir, name)
        now = current.get(name)
        if now is not None and state is not None and state["fingerprint"] == now:
            skipped.append(Unchanged(name, float(state.get("recorded_at", 0)), dict(state.get("counts", {}))))
        else:
            run.append(name)
    return skipped, run


def current_fingerprints(settings, sources: list) -> dict[str, str | None]:
    """Each source's fingerprint now (None for a website, or a GitHub ref that could not be resolved:
    the run then decides, and reports any error in its own words)."""
    from importlib.metadata import version

    from rag_assets.core.model_files import resolve_model_dir
    from rag_assets.core.pages import path_selected

    common = {
        "code": version("rag_assets"),
        "model": settings.embedding_model,
        "model_files": model_signature(resolve_model_dir(settings.embedding_model)),
        "device": settings.embedding_device,
        "precision": settings.embedding_precision,
        "milvus": [settings.milvus_uri, settings.collection],
        "eval": [settings.eval_k, settings.min_recall, settings.eval_blocking],
        "instance": str(settings.dagster_home or settings.data_dir),
    }
    # Set only when set: a fingerprint recorded before these settings existed stays valid without them.
    vectors = {
        "query_prompt": settings.query_prompt,
        "document_prompt": settings.document_prompt,
        "backend": settings.embedding_backend if settings.embedding_backend != "torch" else None,
    }
    common.update({key: value for key, value in vectors.items() if value is not None})
    found = {}
    for source in sources:
        if source.kind == "local":
            selected = lambda p, s=source: path_selected(p, s.include, s.exclude)  # noqa: E731
            known = _known_pages(settings, source.name)
            content = None if known is None else folder_digest(source.path, selected, known)
        elif source.kind == "github":
            content = _github_commit(source)
        else:
            content = None
        queries = settings.queries_dir / f"{source.name}.jsonl"
        extra = hashlib.sha256(queries.read_bytes()).hexdigest() if queries.is_file() else None
        found[source.name] = (
            None
            if content is None
            else fingerprint(
                {**common, "source": source.model_dump_json(), "content": content, "queries": extra}
            )
        )
    return found


def _known_pages(settings, source: str) -> dict[str, KnownPage] | None:
    """What the source's store recorded of each page (empty when it has no store: the digest then
    reads every file); None when its store cannot be read: the source must run, and raw_pages
    rebuilds the store."""
    import sqlite3

    path = ArtifactStore(settings.artifacts_dir).source_store_path(source)
    if not path.is_file():
        return {}
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            rows = db.execute("SELECT path, content_hash, stat, version FROM pages").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return {p: KnownPage(h, stat, version) for p, h, stat, version in rows}


def _github_commit(source) -> str | None:
    from rag_assets.resources.github import GitHubResource

    github = GitHubResource(retry_attempts=1).reader()  # one request: a refusal means "run and see"
    try:
        return "commit:" + github.resolve_commit(source)
    except Exception:  # unreachable or refused: the run reports it in its own words
        return None


def skip_unchanged(settings, sources: list, force: bool = False) -> tuple[list[Unchanged], list[str], dict]:
    """The CLI's hook: (skipped, names still to run, their fingerprints to record after success)."""
    current = {} if force else current_fingerprints(settings, sources)
    skipped, run = split_unchanged(settings.artifacts_dir, [s.name for s in sources], current)
    return skipped, run, current


def record_successes(settings, summaries: list, current: dict) -> None:
    """After a successful `run_ingest`: remember each run source's fingerprint (taken before it ran)."""
    for summary in summaries:
        if current.get(summary.source):
            record(settings.artifacts_dir, summary.source, current[summary.source], summary.counts)
