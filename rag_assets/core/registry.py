"""The source registry's bookkeeping: what changed between the sources file, the partitions and last time.

Pure functions over names and hashes; the sensor (sensors/sources_sensor.py) turns a plan into
partition requests and runs.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rag_assets.core.hashing import content_hash
from rag_assets.core.names import portable_name
from rag_assets.core.pages import path_selected

MISSING_FOLDER = "missing"


def definition_hash(source) -> str:
    """A hash of everything the sources file says about a source (ref, globs, format, URLs...)."""
    return content_hash(source.model_dump_json())


def folder_fingerprint(root: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    """A hash of the selected files' relative paths, sizes and modification times (no file is read).

    Any edit, addition, removal or rename of a selected file changes it; a folder that does not
    exist has the fingerprint "missing".
    """
    root = Path(root)
    if not root.is_dir():
        return MISSING_FOLDER
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
        for name in files:
            path = Path(folder, name)
            relative = portable_name(path.relative_to(root).as_posix())  # as raw_pages names it
            if path_selected(relative, include, exclude):
                try:
                    stat = path.stat()
                except OSError:  # vanished or a dangling link: not a page either way
                    continue
                entries.append(f"{relative}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}")
    return content_hash("\n".join(sorted(entries)))


@dataclass
class RegistryState:
    """The registry sensor's cursor: a tick counter (for run keys) and what each source looked like."""

    generation: int = 0
    definitions: dict[str, str] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> "RegistryState":
        if not cursor:
            return cls()
        try:
            data = json.loads(cursor)
            return cls(
                int(data.get("generation", 0)),
                dict(data.get("definitions", {})),
                dict(data.get("fingerprints", {})),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor is a first tick: it only sets baselines

    def dump(self) -> str:
        return json.dumps(
            {
                "generation": self.generation,
                "definitions": self.definitions,
                "fingerprints": self.fingerprints,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class RegistryPlan:
    added: list[str]  # in the file, not a partition: register and run
    removed: list[str]  # a partition, not in the file: clean up and unregister
    changed: dict[str, str]  # registered sources to run again, with why ("definition" or "files")
    state: RegistryState  # the cursor after this plan

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def plan_registry(
    definitions: dict[str, str], fingerprints: dict[str, str], registered: list[str], previous: RegistryState
) -> RegistryPlan:
    """Compare the sources file (definition hashes, in file order; folder fingerprints of local
    sources) with the registered partitions and the previous cursor.

    A registered source the cursor has not seen yet only sets its baseline: whoever registered it
    (an earlier tick, `rag-assets ingest`) also ran it.
    """
    known = set(registered)
    added = [name for name in definitions if name not in known]
    removed = [name for name in registered if name not in definitions]
    changed: dict[str, str] = {}
    for name, digest in definitions.items():
        if name not in known:
            continue
        if name in previous.definitions and previous.definitions[name] != digest:
            changed[name] = "definition"
        elif (
            name in fingerprints
            and name in previous.fingerprints
            and previous.fingerprints[name] != fingerprints[name]
        ):
            changed[name] = "files"
    generation = previous.generation + (1 if added or removed or changed else 0)
    return RegistryPlan(
        added, removed, changed, RegistryState(generation, dict(definitions), dict(fingerprints))
    )
