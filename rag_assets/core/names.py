"""File names that are not valid UTF-8, written as valid UTF-8 that still names one file.

On Linux a file name is bytes. `os.walk` and `tarfile` hand a name that is not UTF-8 (a Latin-1
`caf\\xe9.md`, which `git archive` and GitHub's tarballs keep as it is) over as a str holding lone
surrogates, which no UTF-8 encoder accepts: Milvus, parquet, JSON and Dagster's event log would all
refuse it. `portable_name` writes each byte that is not part of valid UTF-8 as `%XX` (uppercase hex)
and keeps the rest: `caf\\xe9.md` is stored as `caf%E9.md` on every run, and that is also how the
name is written in a URL. A valid name is returned unchanged.

The one ambiguity: a file literally named `caf%E9.md` beside it gets the same stored name. Readers
keep the first of the two in path order and count the other as a duplicate.
"""

SURROGATE_BYTES = range(0xDC80, 0xDD00)  # what surrogateescape makes of the bytes 0x80..0xFF


def is_portable(name: str) -> bool:
    """Whether `name` encodes as UTF-8 (holds no lone surrogate)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def portable_name(name: str) -> str:
    """`name` as valid UTF-8: every byte of it that is not valid UTF-8 written as `%XX`."""
    if is_portable(name):
        return name
    text = _raw(name).decode("utf-8", "surrogateescape")
    return "".join(f"%{ord(c) - 0xDC00:02X}" if ord(c) in SURROGATE_BYTES else c for c in text)


def _raw(name: str) -> bytes:
    """The bytes on disk; a lone surrogate that surrogateescape did not make (e.g. U+D800) becomes
    bytes that are themselves invalid UTF-8, so it too is escaped."""
    return b"".join(
        c.encode("utf-8", "surrogateescape")
        if ord(c) in SURROGATE_BYTES
        else c.encode("utf-8", "surrogatepass")
        for c in name
    )
