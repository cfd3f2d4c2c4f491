"""Values that always fit their Milvus field, sized the way the strictest Milvus counts them.

Milvus Lite counts a VARCHAR's `max_length` in characters, a Milvus server in UTF-8 bytes; sizing
by UTF-8 bytes fits both. Three treatments, by what a field is for:

- an identifier of a page (`path`, `url`) over its cap keeps its first bytes and ends with
  `…#` and 16 hex digits of the whole value's BLAKE2b hash, so two long paths that share their
  first 2 KB still name two pages, and the same long path always gets the same short one;
- a label (`heading`, `commit`) is cut at a character boundary and ends with `…`;
- anything else over its cap (a chunk's text, an id) cannot be shortened without changing what
  the row means: the row is left out, and `fit_rows` says why.
"""

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from rag_assets.core.hashing import content_hash

ELLIPSIS = "…"
HASH_SUFFIX_HEX = 16
IDENTIFIER_FIELDS = ("path", "url")
LABEL_FIELDS = ("heading", "commit")


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, max_bytes: int, marker: str = ELLIPSIS) -> str:
    """`text` if it fits `max_bytes`, else its longest prefix that fits with `marker` after it."""
    if utf8_size(text) <= max_bytes:
        return text
    room = max(max_bytes - utf8_size(marker), 0)
    return text.encode("utf-8")[:room].decode("utf-8", errors="ignore") + marker


def fit_identifier(value: str, max_bytes: int) -> str:
    """`value` if it fits, else its first bytes + `…#` + a hash of the whole value (still unique)."""
    if utf8_size(value) <= max_bytes:
        return value
    return truncate_utf8(value, max_bytes, f"{ELLIPSIS}#{content_hash(value)[:HASH_SUFFIX_HEX]}")


@dataclass
class FitResult:
    rows: pd.DataFrame
    skipped: Counter = field(default_factory=Counter)  # reason -> rows left out
    notes: list[str] = field(default_factory=list)  # one per row left out: its page and why


def fit_rows(rows: pd.DataFrame, limits: dict[str, int]) -> FitResult:
    """The rows with every VARCHAR value fitting `limits` (field -> max UTF-8 bytes), identifiers
    and labels shortened; rows that still cannot fit, and repeated ids, are left out and counted."""
    if rows.empty:
        return FitResult(rows)
    rows = rows.copy()
    for name in IDENTIFIER_FIELDS:
        if name in rows and name in limits:
            rows[name] = [fit_identifier(str(v), limits[name]) for v in rows[name]]
    for name in LABEL_FIELDS:
        if name in rows and name in limits:
            rows[name] = [truncate_utf8(str(v), limits[name]) for v in rows[name]]
    reasons = [_why_not(row, limits) for row in rows.to_dict("records")]
    duplicated = rows["id"].duplicated(keep="first")
    reasons = [r or ("duplicate id" if d else "") for r, d in zip(reasons, duplicated)]
    result = FitResult(rows[[not r for r in reasons]].reset_index(drop=True))
    for reason, path in zip(reasons, rows["path"] if "path" in rows else [""] * len(rows)):
        if reason:
            result.skipped[reason] += 1
            result.notes.append(f"{path}: row not stored ({reason})")
    return result


def _why_not(row: dict, limits: dict[str, int]) -> str:
    for name, limit in limits.items():
        value = row.get(name)
        if isinstance(value, str) and utf8_size(value) > limit:
            return f"{name} over {limit} bytes"
    return ""
