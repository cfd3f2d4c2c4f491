"""One real Milvus server for the whole test session.

RAG_TEST_MILVUS_URL points the tests at a server you already run (e.g. `http://127.0.0.1:19530`);
otherwise the `milvus` package (a test extra) starts one on 127.0.0.1 in a temp folder. Without
either, the tests skip with the reason (in CI a skip is a failure). Every test module writes its own
collections, named uniquely, and drops them at the end, so an existing server keeps nothing of them.
"""

import os

import pytest

from rag_assets.testing.milvus_server import MilvusServerProcess

URL_VARIABLE = "RAG_TEST_MILVUS_URL"
# Once on this shared machine the server was sent SIGTERM by no one we could find 2 s after it started;
# a second start in a fresh folder is cheap (about 5 s) next to failing the whole tier.
START_ATTEMPTS = 2


@pytest.fixture(scope="session")
def milvus_server_url(tmp_path_factory) -> str:
    if os.environ.get(URL_VARIABLE):
        yield os.environ[URL_VARIABLE]
        return
    try:
        import milvus  # noqa: F401
    except ImportError:
        pytest.skip(
            f"needs a Milvus server: `pip install -e '.[test]'` (package `milvus`) or set {URL_VARIABLE}"
        )
    failures = []
    for _ in range(START_ATTEMPTS):  # a fresh folder each time
        server = MilvusServerProcess(tmp_path_factory.mktemp("milvus-server"))
        try:
            server.start()
            break
        except RuntimeError as error:
            failures.append(str(error))
    else:
        pytest.skip("\n".join(failures))
    try:
        yield server.url
    finally:
        server.stop()
