"""A loopback server that answers like GitHub's REST API and codeload, so tests and benchmarks need no
network.

Shapes follow REST API version 2022-11-28 (see shared/notes/github-api.md). State lives in memory and
is guarded by one lock; every answer is decided under the lock, then sent (and slept for) outside it.
"""

import base64
import copy
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import socket
import struct
import tarfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from rag_assets.core.tarball import tarball_files
from rag_assets.testing.loopback import LoopbackHandler, LoopbackServer

DEFAULT_REF = "main"
DEFAULT_RATE_LIMIT = 5000
RATE_LIMIT_WINDOW_SECONDS = 3600
CHUNK_BYTES = 64 * 1024
GZIP_LEVEL = 6
CODELOAD_PREFIX = "/_codeload"
SHA_MEDIA_TYPE = "application/vnd.github.sha"
RAW_MEDIA_TYPE = "application/vnd.github.raw"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
COMMITTER = {"name": "Fake GitHub", "email": "fake@example.invalid"}

Fault = int | tuple[int, dict[str, str]]
ExtraMember = tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]
CorruptMode = Literal["truncated", "garbage"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it, with the status it answered."""

    method: str
    path: str  # path and query string, as sent
    headers: dict[str, str]  # lower-case names
    status: int
    time: float  # time.time() when it arrived


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset_after: int | None = None  # send this many body bytes, then drop the connection
    trickle: tuple[int, float] | None = None  # send the body this many bytes at a time, pausing between


@dataclass(frozen=True)
class _Commit:
    sha: str
    parent: str
    tree_sha: str
    date: str
    files: dict[str, bytes]
    entries: list[dict[str, Any]]  # the recursive tree listing, sorted by path
    archive: bytes  # built once: every download of a commit gets the same bytes


@dataclass
class _Repo:
    name: str
    default_branch: str
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    corrupt: CorruptMode | None = None

    def resolve(self, ref: str) -> _Commit | None:
        """A branch or tag name, HEAD, a full SHA or a unique SHA prefix of 7+ characters."""
        sha = self.refs.get(self.default_branch if ref == "HEAD" else ref, ref)
        if sha in self.commits:
            return self.commits[sha]
        matches = [c for s, c in self.commits.items() if len(ref) >= 7 and s.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def tree(self, sha: str) -> tuple[str, str, list[dict[str, Any]]] | None:
        """(tree SHA, path prefix, listing) for a commit-ish, a root tree SHA or a subtree SHA."""
        if commit := self.resolve(sha):
            return commit.tree_sha, "", commit.entries
        for commit in self.commits.values():
            if commit.tree_sha == sha:
                return sha, "", commit.entries
            for entry in commit.entries:
                if entry["type"] == "tree" and entry["sha"] == sha:
                    return sha, entry["path"] + "/", commit.entries
        return None


class FakeGitHub(LoopbackServer):
    """GitHub's REST API plus codeload on 127.0.0.1, with knobs for faults, rate limits and latency."""

    def __init__(self, *, latency_ms: float = 0.0, rate_limit: int = DEFAULT_RATE_LIMIT):
        super().__init__()
        self.latency_ms = latency_ms
        self.required_token: str | None = None
        self._repos: dict[str, _Repo] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[tuple[str, deque[Fault]]] = []
        self._resets = 0
        self._trickle: tuple[int, float] | None = None
        self._limit, self._remaining = rate_limit, rate_limit
        self._reset_epoch = int(time.time()) + RATE_LIMIT_WINDOW_SECONDS
        self._serial = itertools.count(1)

    def add_repo(
        self,
        repo: str,
        files: dict[str, bytes | str],
        *,
        ref: str = DEFAULT_REF,
        extra_members: list[ExtraMember] | None = None,
    ) -> str:
        """Create `repo` (its default branch is the first ref added) and commit `files` to `ref`; returns
        the SHA.

        `extra_members` go into the tarball only (not the tree listing), under the top folder unless their
        name starts with '/': symlinks, '../' names, devices, to test hostile archives.
        """
        with self._lock:
            self._repos.setdefault(repo, _Repo(repo, default_branch=ref))
        return self._commit(repo, files, ref, extra_members or [])

    def push(self, repo: str, files: dict[str, bytes | str], *, ref: str = DEFAULT_REF) -> str:
        """A new commit on `ref` whose tree is exactly `files`; older commits stay reachable by SHA."""
        with self._lock:
            if repo not in self._repos:
                raise KeyError(f"no repository {repo!r}: add_repo it first")
        return self._commit(repo, files, ref, [])

    def add_repo_from_tarball(
        self, repo: str, tarball_path: str | os.PathLike[str], *, ref: str = DEFAULT_REF
    ) -> str:
        """Commit the regular files of an archive with one top folder (like `git archive --prefix=x/`),
        stripped."""
        return self.add_repo(repo, tarball_files(tarball_path), ref=ref)

    def _commit(self, repo: str, files: dict[str, bytes | str], ref: str, extra: list[ExtraMember]) -> str:
        data = {
            path: content.encode() if isinstance(content, str) else content for path, content in files.items()
        }
        tree_sha, entries = _git_tree(data)
        with self._lock:
            parent, serial = self._repos[repo].refs.get(ref, ""), next(self._serial)
        now = time.time()
        sha = hashlib.sha1(f"tree {tree_sha}\nparent {parent}\nserial {serial}\n".encode()).hexdigest()
        archive = _build_archive(f"{repo.replace('/', '-')}-{sha[:7]}", sha, data, extra, int(now))
        commit = _Commit(sha, parent, tree_sha, _iso(now), data, entries, archive)
        with self._lock:
            self._repos[repo].commits[sha] = commit
            self._repos[repo].refs[ref] = sha
        return sha

    def fail_next(self, path_contains: str, statuses: list[Fault]) -> None:
        """The next matching requests (API or codeload) get these answers, in order, before normal ones."""
        with self._lock:
            self._faults.append((path_contains, deque(statuses)))

    def reset_connection_mid_tarball(self, times: int = 1) -> None:
        """The next `times` archive downloads send headers and part of the body, then drop the connection."""
        with self._lock:
            self._resets += times

    def trickle_tarballs(self, bytes_per_write: int, pause_seconds: float) -> None:
        """Archive downloads send their body `bytes_per_write` bytes at a time, `pause_seconds` apart (a
        pause longer than the client's read timeout is a stall); `trickle_tarballs(0, 0)` stops it."""
        with self._lock:
            self._trickle = (bytes_per_write, pause_seconds) if bytes_per_write else None

    def serve_corrupt_tarball(self, repo: str, mode: CorruptMode | None) -> None:
        """Serve half an archive ("truncated") or bytes that are not gzip ("garbage"); None serves it
        whole.
        """
        with self._lock:
            self._repos[repo].corrupt = mode

    def set_rate_limit(self, remaining: int, reset_epoch: int) -> None:
        """At 0 remaining, API requests get 403 until `reset_epoch`, when the window refills."""
        with self._lock:
            self._limit, self._remaining, self._reset_epoch = (
                max(self._limit, remaining),
                remaining,
                reset_epoch,
            )

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, path_contains: str) -> int:
        with self._lock:
            return sum(path_contains in r.path for r in self._requests)

    def handle_get(self, handler: LoopbackHandler) -> None:
        arrived = time.time()
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        _send(handler, self._answer("GET", handler.path, handler.lower_headers, arrived))

    def _answer(self, method: str, target: str, headers: dict[str, str], arrived: float) -> _Answer:
        split = urlsplit(target)
        with self._lock:
            if split.path.startswith(CODELOAD_PREFIX + "/"):
                answer = self._fault(target) or self._codeload(split.path)
            else:
                answer = self._fault(target) or self._refusal(headers)
                if answer is None:
                    self._remaining -= 1
                    answer = self._route(split.path, parse_qs(split.query, keep_blank_values=True), headers)
                    if answer.status == 304 and "authorization" in headers:
                        self._remaining += 1  # conditional hits with a token are free on GitHub
                for name, value in self._rate_headers().items():
                    answer.headers.setdefault(name, value)
            # Recorded before sending, so a client that has its answer always finds the request here.
            self._requests.append(RecordedRequest(method, target, headers, answer.status, arrived))
        return answer

    def _fault(self, target: str) -> _Answer | None:
        for path_contains, queue in self._faults:
            if queue and path_contains in target:
                fault = queue.popleft()
                status, extra = (fault, {}) if isinstance(fault, int) else fault
                return _json(status, {"message": HTTPStatus(status).phrase}, dict(extra))
        return None

    def _refusal(self, headers: dict[str, str]) -> _Answer | None:
        if not headers.get("user-agent", "").strip():
            return _json(
                403,
                {
                    "message": "Request forbidden by administrative rules. "
                    "Please make sure your request has a User-Agent header"
                },
            )
        token = self.required_token
        if token is not None and headers.get("authorization") not in (f"Bearer {token}", f"token {token}"):
            return _json(401, {"message": "Bad credentials"})
        if time.time() >= self._reset_epoch:
            self._remaining, self._reset_epoch = self._limit, int(time.time()) + RATE_LIMIT_WINDOW_SECONDS
        if self._remaining <= 0:
            return _json(403, {"message": "API rate limit exceeded"})
        return None

    def _rate_headers(self) -> dict[str, str]:
        remaining = max(self._remaining, 0)
        return {
            "x-ratelimit-limit": str(self._limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-used": str(self._limit - remaining),
            "x-ratelimit-reset": str(self._reset_epoch),
            "x-ratelimit-resource": "core",
        }

    def _route(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> _Answer:
        match = _API_PATH.fullmatch(path)
        repo = self._repos.get(f"{unquote(match[1])}/{unquote(match[2])}") if match else None
        if match is None or repo is None:
            return _not_found()
        endpoint, rest = match[3], unquote(match[4] or "")
        accept = headers.get("accept", "")
        if endpoint == "commits" and (commit := repo.resolve(rest)):
            etag = f'"{commit.sha}"'
            if _etag_matches(headers.get("if-none-match", ""), commit.sha):
                return _Answer(304, {"ETag": etag})
            if SHA_MEDIA_TYPE in accept:
                content_type = f"{SHA_MEDIA_TYPE}; charset=utf-8"
                return _Answer(200, {"Content-Type": content_type, "ETag": etag}, commit.sha.encode())
            return _json(200, _commit_json(commit), {"ETag": etag})
        if endpoint == "tarball" and (commit := repo.resolve(rest or "HEAD")):
            return _Answer(
                302, {"Location": f"{self.url}{CODELOAD_PREFIX}/{repo.name}/legacy.tar.gz/{commit.sha}"}
            )
        if endpoint == "git/trees" and (found := repo.tree(rest)):
            tree_sha, prefix, entries = found
            recursive = "recursive" in query
            listing = [
                dict(e, path=e["path"][len(prefix) :])
                for e in entries
                if e["path"].startswith(prefix) and (recursive or "/" not in e["path"][len(prefix) :])
            ]
            return _json(200, {"sha": tree_sha, "tree": listing, "truncated": False})
        if endpoint == "contents" and (commit := repo.resolve(query.get("ref", ["HEAD"])[0])):
            return _contents(commit, rest.strip("/"), RAW_MEDIA_TYPE in accept or ".raw" in accept)
        return _not_found()

    def _codeload(self, path: str) -> _Answer:
        match = _CODELOAD_PATH.fullmatch(path)
        repo = self._repos.get(f"{match[1]}/{match[2]}") if match else None
        commit = repo.resolve(match[3]) if repo and match else None
        if repo is None or commit is None:
            return _Answer(404, {"Content-Type": "text/plain"}, b"404: Not Found")
        body = commit.archive
        if repo.corrupt == "truncated":
            body = body[: len(body) // 2]
        elif repo.corrupt == "garbage":
            body = hashlib.sha256(commit.sha.encode()).digest() * 64
        reset_after = None
        if self._resets > 0:
            self._resets -= 1
            reset_after = max(1, min(CHUNK_BYTES, len(body) // 2))
        top = f"{repo.name.replace('/', '-')}-{commit.sha[:7]}"
        headers = {
            "Content-Type": "application/x-gzip",
            "ETag": f'"{commit.sha}"',
            "Content-Disposition": f"attachment; filename={top}.tar.gz",
        }
        return _Answer(200, headers, body, reset_after, self._trickle)


_API_PATH = re.compile(r"/repos/([^/]+)/([^/]+)/(commits|tarball|git/trees|contents)(?:/(.*))?")
_CODELOAD_PATH = re.compile(re.escape(CODELOAD_PREFIX) + r"/([^/]+)/([^/]+)/legacy\.tar\.gz/([0-9a-f]{7,40})")


def _send(handler: LoopbackHandler, answer: _Answer) -> None:
    handler.send_response(answer.status)
    for name, value in answer.headers.items():
        handler.send_header(name, value)
    if answer.status != 304:
        handler.send_header("Content-Length", str(len(answer.body)))
    handler.end_headers()
    body = memoryview(answer.body)[: answer.reset_after]
    size, pause = answer.trickle or (CHUNK_BYTES, 0.0)
    for start in range(0, len(body), size):
        handler.wfile.write(body[start : start + size])
        if pause:
            handler.wfile.flush()
            time.sleep(pause)
    if answer.reset_after is not None:  # linger 0: close with a TCP reset, like a dropped connection
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()  # now, before socketserver's graceful shutdown could send a FIN
        handler.close_connection = True


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(
        status, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}, json.dumps(payload).encode()
    )


def _not_found() -> _Answer:
    return _json(404, {"message": "Not Found"})


def _etag_matches(if_none_match: str, sha: str) -> bool:
    tags = [tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")]
    return sha in tags or "*" in tags


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _commit_json(commit: _Commit) -> dict[str, Any]:
    person = {**COMMITTER, "date": commit.date}
    return {
        "sha": commit.sha,
        "parents": [{"sha": commit.parent}] if commit.parent else [],
        "commit": {
            "tree": {"sha": commit.tree_sha},
            "author": person,
            "committer": person,
            "message": f"Commit {commit.sha[:7]}",
        },
    }


def _contents(commit: _Commit, path: str, raw: bool) -> _Answer:
    """One file: raw bytes, or GitHub's JSON with the content in base64."""
    if path not in commit.files:
        return _not_found()
    data = commit.files[path]
    if raw:
        return _Answer(200, {"Content-Type": f"{RAW_MEDIA_TYPE}; charset=utf-8"}, data)
    return _json(
        200,
        {
            "type": "file",
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": _blob_sha(data),
            "size": len(data),
            "encoding": "base64",
            "content": base64.encodebytes(data).decode(),
        },
    )


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git_tree(files: dict[str, bytes]) -> tuple[str, list[dict[str, Any]]]:
    """The root tree SHA, computed as git does, and the recursive listing the trees endpoint returns."""
    root: dict[str, Any] = {}
    for path, data in files.items():
        *folders, name = path.split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = data
    entries: list[dict[str, Any]] = []
    return _write_tree(root, "", entries), sorted(entries, key=lambda e: e["path"])


def _write_tree(node: dict[str, Any], prefix: str, entries: list[dict[str, Any]]) -> str:
    records = []
    for name, child in node.items():
        if isinstance(child, dict):
            sha = _write_tree(child, f"{prefix}{name}/", entries)
            entries.append({"path": prefix + name, "mode": "040000", "type": "tree", "sha": sha})
            records.append((name + "/", b"40000 " + _raw(name), sha))  # git sorts folders as "name/"
        else:
            sha = _blob_sha(child)
            entries.append(
                {"path": prefix + name, "mode": "100644", "type": "blob", "sha": sha, "size": len(child)}
            )
            records.append((name, b"100644 " + _raw(name), sha))
    body = b"".join(
        head + b"\0" + bytes.fromhex(sha) for _, head, sha in sorted(records, key=lambda r: _raw(r[0]))
    )
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def _raw(name: str) -> bytes:
    """A name's bytes as git stores them: a name read from an archive keeps bytes that are not UTF-8
    as surrogates (surrogateescape), as `os.walk` and `tarfile` give them."""
    return name.encode("utf-8", "surrogateescape")


def _build_archive(
    top: str, sha: str, files: dict[str, bytes], extra: list[ExtraMember], mtime: int
) -> bytes:
    """A gzipped tar like codeload's: a pax header naming the commit, one top folder, folders before files."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=mtime) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": sha}) as tar,
    ):
        tar.addfile(_info(f"{top}/", tarfile.DIRTYPE, 0o755, 0, mtime))
        seen: set[str] = set()
        for path in sorted(files):
            parts = path.split("/")
            for folder in ("/".join(parts[:depth]) for depth in range(1, len(parts))):
                if folder not in seen:
                    seen.add(folder)
                    tar.addfile(_info(f"{top}/{folder}/", tarfile.DIRTYPE, 0o755, 0, mtime))
            data = files[path]
            tar.addfile(_info(f"{top}/{path}", tarfile.REGTYPE, 0o644, len(data), mtime), io.BytesIO(data))
        for member in extra:
            info, payload = member if isinstance(member, tuple) else (member, None)
            info = copy.copy(info)  # the caller's TarInfo stays as given
            info.name = info.name if info.name.startswith("/") else f"{top}/{info.name}"
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes, mode: int, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, mtime
    return info
