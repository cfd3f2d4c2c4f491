"""What changed between two versions of a source: pages by path and hash, chunks by place and id."""

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Diff:
    added: int
    modified: int
    removed: int
    unchanged: int

    def as_metadata(self, noun: str) -> dict[str, int]:
        return {f"{noun}_{k}": v for k, v in vars(self).items()}


def diff_pages(previous: pd.DataFrame | None, current: pd.DataFrame) -> Diff:
    """Pages compared by path; a page is modified when its content hash differs."""
    before = _mapping(previous, "path", "content_hash")
    after = dict(zip(current["path"], current["content_hash"]))
    return _diff(before, after)


def diff_chunks(previous: pd.DataFrame | None, current: pd.DataFrame) -> Diff:
    """Chunks compared by place (path, heading, position among that heading's chunks) and by id."""
    return _diff(_chunk_places(previous), _chunk_places(current))


def _chunk_places(frame: pd.DataFrame | None) -> dict[tuple, str]:
    if frame is None or frame.empty:
        return {}
    ordinal = frame.groupby(["path", "heading"]).cumcount()
    return dict(zip(zip(frame["path"], frame["heading"], ordinal), frame["id"]))


def _mapping(frame: pd.DataFrame | None, key: str, value: str) -> dict:
    return {} if frame is None or frame.empty else dict(zip(frame[key], frame[value]))


def _diff(before: dict, after: dict) -> Diff:
    common = before.keys() & after.keys()
    modified = sum(1 for k in common if before[k] != after[k])
    return Diff(
        added=len(after.keys() - before.keys()),
        modified=modified,
        removed=len(before.keys() - after.keys()),
        unchanged=len(common) - modified,
    )
