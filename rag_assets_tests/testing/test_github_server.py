"""FakeGitHub answers with the shapes of GitHub's REST API, so tests of the GitHub source can trust it."""

import base64
import hashlib
import io
import tarfile
import threading
import time

import httpx
import pytest

from rag_assets.testing.github_server import FakeGitHub

REPO = "acme/docs"
FILES = {"README.md": "# Acme\n", "docs/guide.md": "Guide\n", "docs/api/ref.rst": b"Ref\n"}
HEADERS = {
    "User-Agent": "rag-assets-tests",
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}
SHA_ACCEPT = {"Accept": "application/vnd.github.sha"}


@pytest.fixture
def github(github):
    github.add_repo(REPO, FILES)
    return github


@pytest.fixture
def client(github):
    with httpx.Client(base_url=github.url, headers=HEADERS, timeout=5) as http:
        yield http


def _names(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.getnames()


def test_commit_with_sha_media_type_answers_the_bare_sha_and_etag(github, client):
    sha = github.push(REPO, FILES)
    response = client.get(f"/repos/{REPO}/commits/main", headers=SHA_ACCEPT)
    assert response.status_code == 200
    assert response.text == sha
    assert response.headers["etag"] == f'"{sha}"'


@pytest.mark.parametrize("template", ['"{}"', 'W/"{}"', "{}"])
def test_commit_answers_304_when_if_none_match_is_the_current_sha(github, client, template):
    sha = client.get(f"/repos/{REPO}/commits/main", headers=SHA_ACCEPT).text
    response = client.get(
        f"/repos/{REPO}/commits/main", headers={**SHA_ACCEPT, "If-None-Match": template.format(sha)}
    )
    assert (response.status_code, response.content) == (304, b"")
    github.push(REPO, {"new.md": "x"})
    moved = client.get(f"/repos/{REPO}/commits/main", headers={**SHA_ACCEPT, "If-None-Match": f'"{sha}"'})
    assert moved.status_code == 200 and moved.text != sha


def test_commit_json_has_sha_tree_sha_and_committer_date(client):
    body = client.get(f"/repos/{REPO}/commits/main").json()
    assert len(body["sha"]) == 40
    assert len(body["commit"]["tree"]["sha"]) == 40
    assert body["commit"]["committer"]["date"].endswith("Z")


def test_commit_resolves_head_and_old_shas_and_404s_the_unknown(github, client):
    first = client.get(f"/repos/{REPO}/commits/HEAD", headers=SHA_ACCEPT).text
    second = github.push(REPO, {"only.md": "x"})
    assert client.get(f"/repos/{REPO}/commits/{first}", headers=SHA_ACCEPT).text == first
    assert client.get(f"/repos/{REPO}/commits/main", headers=SHA_ACCEPT).text == second
    unknown = (
        f"/repos/{REPO}/commits/nope",
        "/repos/acme/missing/commits/main",
        f"/repos/{REPO}/commits/{'0' * 40}",
    )
    for path in unknown:
        response = client.get(path)
        assert (response.status_code, response.json()) == (404, {"message": "Not Found"})


def test_tarball_redirects_to_codeload_which_serves_one_top_folder(github, client):
    sha = client.get(f"/repos/{REPO}/commits/main", headers=SHA_ACCEPT).text
    redirect = client.get(f"/repos/{REPO}/tarball/main")
    assert redirect.status_code == 302
    assert redirect.headers["location"] == f"{github.url}/_codeload/{REPO}/legacy.tar.gz/{sha}"
    archive = client.get(redirect.headers["location"])
    assert archive.headers["content-type"] == "application/x-gzip"
    assert int(archive.headers["content-length"]) == len(archive.content)
    top = f"acme-docs-{sha[:7]}"
    assert {n.split("/")[0] for n in _names(archive.content)} == {top}
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        assert tar.extractfile(f"{top}/docs/api/ref.rst").read() == b"Ref\n"
        assert tar.pax_headers["comment"] == sha


def test_tarball_of_a_commit_is_the_same_bytes_every_time(client):
    first = client.get(f"/repos/{REPO}/tarball/main", follow_redirects=True).content
    assert client.get(f"/repos/{REPO}/tarball/main", follow_redirects=True).content == first


def test_extra_members_go_into_the_archive_under_the_top_folder(github, client):
    link = tarfile.TarInfo("docs/evil.md")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    escape = (tarfile.TarInfo("../escape.md"), b"x")
    sha = github.add_repo("acme/hostile", {"ok.md": "ok"}, extra_members=[link, escape])
    names = _names(client.get("/repos/acme/hostile/tarball/main", follow_redirects=True).content)
    assert f"acme-hostile-{sha[:7]}/docs/evil.md" in names
    assert f"acme-hostile-{sha[:7]}/../escape.md" in names


def test_tree_lists_git_blob_shas_and_matches_git(client):
    tree_sha = client.get(f"/repos/{REPO}/commits/main").json()["commit"]["tree"]["sha"]
    body = client.get(f"/repos/{REPO}/git/trees/{tree_sha}", params={"recursive": "1"}).json()
    assert body["sha"] == tree_sha and body["truncated"] is False
    blobs = {e["path"]: e for e in body["tree"] if e["type"] == "blob"}
    assert set(blobs) == set(FILES)
    data = b"Guide\n"
    assert blobs["docs/guide.md"] == {
        "path": "docs/guide.md",
        "mode": "100644",
        "type": "blob",
        "size": len(data),
        "sha": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
    }
    top_level = client.get(f"/repos/{REPO}/git/trees/main").json()["tree"]
    assert [(e["path"], e["type"]) for e in top_level] == [("README.md", "blob"), ("docs", "tree")]


def test_tree_sha_is_the_one_git_computes():
    # From `git write-tree` over README.md="hi", docs/a.md="A", docs/sub/b.md="B" (no newlines).
    with FakeGitHub() as server:
        server.add_repo("acme/one", {"README.md": "hi", "docs/a.md": "A", "docs/sub/b.md": "B"})
        with httpx.Client(base_url=server.url, headers=HEADERS) as http:
            tree = http.get("/repos/acme/one/git/trees/main").json()
    assert tree["sha"] == "f9ea5a0a0f7f4916f50890aa0510d8f43e36f446"


def test_contents_with_raw_media_type_answers_the_file_bytes(client):
    raw = client.get(
        f"/repos/{REPO}/contents/docs/guide.md",
        params={"ref": "main"},
        headers={"Accept": "application/vnd.github.raw"},
    )
    assert (raw.status_code, raw.content) == (200, b"Guide\n")
    as_json = client.get(f"/repos/{REPO}/contents/docs/guide.md").json()
    assert base64.b64decode(as_json["content"]) == b"Guide\n"
    assert client.get(f"/repos/{REPO}/contents/nope.md").status_code == 404


def test_api_answers_carry_rate_limit_headers_and_codeload_answers_do_not(client):
    api = client.get(f"/repos/{REPO}/commits/main")
    assert api.headers["x-ratelimit-resource"] == "core"
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(api.headers)
    later = client.get(f"/repos/{REPO}/commits/main")
    assert int(later.headers["x-ratelimit-remaining"]) == int(api.headers["x-ratelimit-remaining"]) - 1
    archive = client.get(f"/repos/{REPO}/tarball/main", follow_redirects=True)
    assert "x-ratelimit-remaining" not in archive.headers


def test_request_without_user_agent_is_refused(github):
    with httpx.Client(base_url=github.url) as http:
        http.headers.pop("user-agent")
        assert http.get(f"/repos/{REPO}/commits/main").status_code == 403


def test_fault_queue_answers_in_order_for_matching_paths_then_recovers(github, client):
    github.fail_next("/commits/", [503, (429, {"retry-after": "1"})])
    assert client.get(f"/repos/{REPO}/git/trees/main").status_code == 200  # not matching: untouched
    first = client.get(f"/repos/{REPO}/commits/main")
    second = client.get(f"/repos/{REPO}/commits/main")
    assert first.status_code == 503
    assert (second.status_code, second.headers["retry-after"]) == (429, "1")
    assert client.get(f"/repos/{REPO}/commits/main").status_code == 200


def test_connection_reset_mid_tarball_is_an_error_for_the_client_once(github, client):
    github.add_repo(
        "acme/big", {f"page{i}.md": hashlib.sha256(b"%d" % i).hexdigest() * 400 for i in range(40)}
    )
    github.reset_connection_mid_tarball(times=1)
    with pytest.raises(httpx.TransportError):
        client.get("/repos/acme/big/tarball/main", follow_redirects=True)
    assert len(_names(client.get("/repos/acme/big/tarball/main", follow_redirects=True).content)) == 41


@pytest.mark.parametrize("mode", ["truncated", "garbage"])
def test_corrupt_tarball_arrives_whole_but_cannot_be_read(github, client, mode):
    github.serve_corrupt_tarball(REPO, mode)
    response = client.get(f"/repos/{REPO}/tarball/main", follow_redirects=True)
    assert response.status_code == 200
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        _names(response.content)


def test_rate_limit_at_zero_answers_403_until_the_reset(github, client):
    reset = int(time.time()) + 3600
    github.set_rate_limit(0, reset)
    refused = client.get(f"/repos/{REPO}/commits/main")
    assert refused.status_code == 403
    assert (refused.headers["x-ratelimit-remaining"], refused.headers["x-ratelimit-reset"]) == (
        "0",
        str(reset),
    )
    github.set_rate_limit(0, int(time.time()) - 1)  # the window has passed: it refills
    assert client.get(f"/repos/{REPO}/commits/main").status_code == 200


def test_required_token_refuses_requests_without_it(github, client):
    github.required_token = "s3cret"
    refused = client.get(f"/repos/{REPO}/commits/main")
    assert (refused.status_code, refused.json()) == (401, {"message": "Bad credentials"})
    authorized = client.get(f"/repos/{REPO}/commits/main", headers={"Authorization": "Bearer s3cret"})
    assert authorized.status_code == 200


def test_conditional_hit_with_a_token_does_not_count_against_the_limit(github, client):
    sha = client.get(f"/repos/{REPO}/commits/main", headers=SHA_ACCEPT).text
    conditional = {**SHA_ACCEPT, "If-None-Match": f'"{sha}"', "Authorization": "Bearer t"}
    before = client.get(f"/repos/{REPO}/commits/main", headers=conditional).headers["x-ratelimit-remaining"]
    assert (
        client.get(f"/repos/{REPO}/commits/main", headers=conditional).headers["x-ratelimit-remaining"]
        == before
    )


def test_requests_are_recorded_with_lower_case_headers_and_status(github, client):
    client.get(f"/repos/{REPO}/tarball/main", follow_redirects=True)
    client.get("/repos/acme/missing/commits/main")
    recorded = github.requests
    assert [(r.method, r.status) for r in recorded] == [("GET", 302), ("GET", 200), ("GET", 404)]
    assert recorded[0].headers["user-agent"] == "rag-assets-tests"
    assert (
        github.count("/tarball/") == 1 and github.count("legacy.tar.gz") == 1 and github.count("/repos/") == 2
    )


def test_recording_is_safe_under_concurrent_requests(github):
    def fetch() -> None:
        with httpx.Client(base_url=github.url, headers=HEADERS) as http:
            for _ in range(5):
                http.get(f"/repos/{REPO}/commits/main", headers=SHA_ACCEPT)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert github.count("/commits/") == 40


def test_latency_delays_every_answer():
    with FakeGitHub(latency_ms=50) as server:
        server.add_repo(REPO, FILES)
        with httpx.Client(base_url=server.url, headers=HEADERS) as http:
            started = time.perf_counter()
            http.get(f"/repos/{REPO}/tarball/main", follow_redirects=True)  # two round trips
            assert time.perf_counter() - started >= 0.1


def test_add_repo_from_tarball_strips_the_top_folder(tmp_path, github, client):
    path = tmp_path / "docs.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {"x/index.md": b"Index\n", "x/sub/page.md": b"Page\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    github.add_repo_from_tarball("acme/packed", path)
    paths = [e["path"] for e in client.get("/repos/acme/packed/git/trees/main?recursive=1").json()["tree"]]
    assert paths == ["index.md", "sub", "sub/page.md"]
