"""GitHub's HTTP shapes as an httpx.MockTransport, for tests of the GitHub reader that need the
answers and nothing of a socket (see shared/notes/github-api.md). End-to-end tests and the benchmark
use the loopback server (rag_assets/testing/github_server.py).

Answers: `GET /repos/{o}/{r}/commits/{ref}` (the commit as JSON, or the bare SHA with the SHA media
type; 304 when `If-None-Match` is the current SHA), `GET /repos/{o}/{r}/tarball/{sha}` (302 to
codeload), and codeload's gzipped tar with one top folder `{o}-{r}-{short sha}/`.
"""

import copy
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator

import httpx

SHA_MEDIA_TYPE = "application/vnd.github.sha"
COMMITTED_AT = "2024-05-01T12:00:00Z"
Member = tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]


class GitHubShapes:
    """One repository at one commit; every request is recorded; `fail_next` answers come first."""

    def __init__(self, repo: str, files: dict[str, str | bytes], extra_members: list[Member] = ()):
        self.repo, self.files, self.extra = repo, files, list(extra_members)
        self.sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        self.requests: list[httpx.Request] = []
        self._faults: list[tuple[str, httpx.Response]] = []
        self.archive_body: Callable[[bytes], bytes | Iterator[bytes]] = lambda archive: archive
        self.transport = httpx.MockTransport(self._handle)

    def fail_next(self, path_contains: str, *answers: httpx.Response) -> None:
        """The next requests whose path contains `path_contains` get `answers`, in order."""
        self._faults += [(path_contains, answer) for answer in answers]

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for index, (path_contains, answer) in enumerate(self._faults):
            if path_contains in request.url.path:
                del self._faults[index]
                return answer
        path, etag = request.url.path, f'"{self.sha}"'
        if path.startswith(f"/repos/{self.repo}/commits/"):
            if request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            if SHA_MEDIA_TYPE in request.headers.get("accept", ""):
                return httpx.Response(200, headers={"ETag": etag}, text=self.sha)
            person = {"name": "Shapes", "email": "shapes@example.invalid", "date": COMMITTED_AT}
            body = {"sha": self.sha, "commit": {"tree": {"sha": "1" * 40}, "committer": person}}
            return httpx.Response(200, headers={"ETag": etag}, json=body)
        if path == f"/repos/{self.repo}/tarball/{self.sha}":
            return httpx.Response(302, headers={"Location": f"https://codeload.test/{self.repo}/{self.sha}"})
        if request.url.host == "codeload.test" and path == f"/{self.repo}/{self.sha}":
            return httpx.Response(200, content=self.archive_body(self._archive()))
        return httpx.Response(404, json={"message": "Not Found"})

    def _archive(self) -> bytes:
        top = f"{self.repo.replace('/', '-')}-{self.sha[:7]}"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, content in sorted(self.files.items()):
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(f"{top}/{path}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for member in self.extra:
                info, data = member if isinstance(member, tuple) else (member, None)
                info = copy.copy(info)  # the caller's TarInfo stays as given
                info.name = info.name if info.name.startswith("/") else f"{top}/{info.name}"
                if data is not None:
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return gzip.compress(buffer.getvalue())


def json_error(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, content=json.dumps({"message": "no"}).encode())
