"""Content hashes and stable ids."""

import hashlib


def content_hash(data: str | bytes) -> str:
    """A short, collision-resistant hex digest of text or bytes (BLAKE2b, 128 bits)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def stable_id(*parts: str) -> str:
    """An id derived from its parts; the separator keeps ("ab", "c") and ("a", "bc") apart."""
    return content_hash("\x1f".join(parts))
