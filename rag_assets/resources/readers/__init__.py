"""Source readers: one module per kind of source (`github`, `local`, `web`), one protocol.

`reader.read(source, known)` returns a `ReadResult`: the source's pages as rows streamed to the store,
what happened to what it offered (one `PageStats` for every kind), the version read and when the content was
current. Readers are plain objects, free of Dagster; the `github` and `web` resources build them
from their configuration (rag_assets/resources/github.py, web.py).
"""

from rag_assets.resources.readers.protocol import ReadResult, SourceReader

__all__ = ["ReadResult", "SourceReader"]
