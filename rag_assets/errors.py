"""Errors the CLI reports in its own words, importable without Dagster."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceFailure:
    """One source of a failed run: the step that failed, its error (one line) and what to do."""

    source: str
    step: str
    error: str
    hint: str
    log_file: Path

    def describe(self) -> str:
        hint = f" {self.hint}." if self.hint else ""
        return f"source {self.source!r}: step {self.step} failed: {self.error}.{hint} Log: {self.log_file}"


class IngestFailed(RuntimeError):
    """Runs failed: one `SourceFailure` per failed source; `summaries` of the sources that succeeded."""

    def __init__(self, failures: list[SourceFailure], summaries: list):
        super().__init__("\n".join(f.describe() for f in failures))
        self.failures = failures
        self.summaries = summaries


class MilvusUnavailable(RuntimeError):
    """Milvus cannot be used at all (unreachable, refused the token, Lite file held elsewhere): one line."""


class MilvusLiteBusy(MilvusUnavailable):
    """The Milvus Lite file is open in another process; Lite admits one process per file."""


class InstanceUnavailable(RuntimeError):
    """The Dagster instance cannot be opened (its storage is damaged, locked, or creating it took too
    long): one line saying what to do."""
