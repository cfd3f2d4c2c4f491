"""The sources file: which documentation sources exist and how to read them.

Validated as a whole before anything uses it, so an invalid file changes nothing anywhere.
"""

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from wcmatch import glob as wcglob

from rag_assets.core.pages import (
    DEFAULT_MAX_CHUNKS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PAGES,
    DEFAULT_MAX_TOTAL_BYTES,
    ReadLimits,
)

SOURCE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would admit a final newline
REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/(?!\.{1,2}$)[A-Za-z0-9_.-]{1,100}$")
ENV_VAR_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
SECRET_FIELD_PATTERN = re.compile(r"token|password|secret|api_key|credential", re.IGNORECASE)
REF_PATTERN = re.compile(r"^(?!.*\.\.)(?!/)[A-Za-z0-9_./-]{1,250}(?<!/)$")
DEFAULT_INCLUDE = ("**/*.md", "**/*.markdown", "**/*.rst", "**/*.txt")
GITHUB_API_URL = "https://api.github.com"
GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.BRACE | wcglob.DOTGLOB
DEFAULT_MAX_STALENESS_HOURS = 24.0
HTTP_URL_PATTERN = re.compile(r"^https?://[^\s/]+(/[^\s]*)?$")
KINDS = ("github", "local", "web")
DEFAULT_PAGE_DEADLINE_SECONDS = 60.0  # one web page, every redirect hop and retry included
DEFAULT_CRAWL_DEADLINE_SECONDS = 3600.0  # one crawl of one website
DEFAULT_MAX_CRAWL_DELAY_SECONDS = 10.0  # the most a robots.txt Crawl-delay may space requests
DEFAULT_DOWNLOAD_STALL_SECONDS = 60.0  # a GitHub tarball download with no byte for this long is retried
DEFAULT_DOWNLOAD_DEADLINE_SECONDS = 3600.0  # one GitHub tarball download, retries included


class SourcesFileError(ValueError):
    """The sources file is missing or invalid; the message names the file, the entry and the field."""


def _check_glob(pattern: str) -> str:
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
        raise ValueError(f"glob {pattern!r} must be a non-empty relative pattern without '..'")
    try:
        wcglob.translate(pattern, flags=GLOB_FLAGS)
    except Exception as error:  # wcmatch raises several types for malformed patterns
        raise ValueError(f"glob {pattern!r} is malformed: {error}") from None
    return pattern


def _check_http_url(field: str, url: str) -> str:
    if not HTTP_URL_PATTERN.fullmatch(url):
        raise ValueError(f"{field} {url!r} must be an http(s) URL")
    split = urlsplit(url)
    if split.username is not None or split.password is not None:  # the value is not echoed: it holds a secret
        raise ValueError(
            f"{field} must not carry credentials (user:password@); tokens come from the environment"
        )
    return url


class SourceLimits(BaseModel):
    """What reading one source may cost. A file over `max_file_bytes` is skipped and counted; past
    `max_pages` pages, `max_total_bytes` bytes read (after decompression) or `max_chunks` chunks the
    rest is left out and the run's metadata says so (`limit_hit`).

    Time: a web page must arrive whole within `page_deadline_seconds` (or it is skipped), a crawl
    stops fetching after `crawl_deadline_seconds` (`limit_hit`), a robots.txt Crawl-delay is obeyed up
    to `max_crawl_delay_seconds`; a GitHub tarball download fails after `download_stall_seconds`
    without a byte (retried) or `download_deadline_seconds` in all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1)
    max_pages: int = Field(DEFAULT_MAX_PAGES, ge=1)
    max_chunks: int = Field(DEFAULT_MAX_CHUNKS, ge=1)
    max_total_bytes: int = Field(DEFAULT_MAX_TOTAL_BYTES, ge=1)
    page_deadline_seconds: float = Field(DEFAULT_PAGE_DEADLINE_SECONDS, gt=0)
    crawl_deadline_seconds: float = Field(DEFAULT_CRAWL_DEADLINE_SECONDS, gt=0)
    max_crawl_delay_seconds: float = Field(DEFAULT_MAX_CRAWL_DELAY_SECONDS, ge=0)
    download_stall_seconds: float = Field(DEFAULT_DOWNLOAD_STALL_SECONDS, gt=0)
    download_deadline_seconds: float = Field(DEFAULT_DOWNLOAD_DEADLINE_SECONDS, gt=0)

    def read_limits(self) -> ReadLimits:
        return ReadLimits(self.max_file_bytes, self.max_pages, self.max_total_bytes)


class _SourceBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    format: Literal["rst", "markdown", "text"] | None = None
    max_staleness_hours: float = Field(DEFAULT_MAX_STALENESS_HOURS, gt=0)
    limits: SourceLimits = Field(default_factory=SourceLimits)
    # A run that finds no page: `keep` fails it and leaves the source's rows as they are (a moved
    # folder or a wrong glob must not empty the index); `delete` makes the source's rows empty.
    on_empty: Literal["keep", "delete"] = "keep"

    @field_validator("name")
    @classmethod
    def _name_is_partition_key(cls, name: str) -> str:
        if not SOURCE_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"name {name!r} must be 1-63 of lowercase letters, digits, '_' and '-', starting with a "
                "letter or digit"
            )
        return name

    @field_validator("include", "exclude")
    @classmethod
    def _globs_are_valid(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_glob(p) for p in patterns)


class GitHubSource(_SourceBase):
    """A folder of a GitHub repository at a branch, tag or commit."""

    kind: Literal["github"]
    repo: str
    ref: str = "HEAD"
    api_url: str = GITHUB_API_URL
    web_url: str | None = None
    token_env: str = "GITHUB_TOKEN"

    @field_validator("repo")
    @classmethod
    def _repo_is_owner_slash_name(cls, repo: str) -> str:
        if not REPO_PATTERN.fullmatch(repo) or repo.endswith((".", "/..")):
            raise ValueError(f"repo {repo!r} must look like 'owner/name'")
        return repo

    @field_validator("ref")
    @classmethod
    def _ref_is_plain(cls, ref: str) -> str:
        if not REF_PATTERN.fullmatch(ref):
            raise ValueError(f"ref {ref!r} is not a valid branch, tag or commit name")
        return ref

    @field_validator("api_url", "web_url")
    @classmethod
    def _url_is_http(cls, url: str | None, info) -> str | None:
        return None if url is None else _check_http_url(info.field_name, url).rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _token_env_is_a_variable_name(cls, name: str) -> str:
        if not ENV_VAR_PATTERN.fullmatch(name):  # the value is not echoed: it may be a pasted token
            raise ValueError(
                "token_env must be the name of an environment variable (A-Z, 0-9, _), not a token"
            )
        return name

    @property
    def owner_and_name(self) -> tuple[str, str]:
        owner, name = self.repo.split("/")
        return owner, name

    def page_url(self, sha: str, path: str) -> str:
        """The web link to a file at a commit (github.com, GitHub Enterprise, or the API host itself)."""
        if self.web_url:
            base = self.web_url.rstrip("/")
        elif self.api_url == GITHUB_API_URL:
            base = "https://github.com"
        else:
            base = re.sub(r"/api/v3$", "", self.api_url)
        return f"{base}/{self.repo}/blob/{sha}/{path}"


class LocalSource(_SourceBase):
    """A folder on this machine; a relative path is relative to the sources file."""

    kind: Literal["local"]
    path: Path


class WebSource(_SourceBase):
    """A website: pages listed by a sitemap and/or reached by links from a start page, under a URL prefix.

    `include`/`exclude` globs match the URL path without its leading '/'. Pages are converted from
    HTML to Markdown, so `format` is always markdown.
    """

    kind: Literal["web"]
    sitemap_url: str | None = None
    start_url: str | None = None
    url_prefix: str | None = None  # default: start_url's folder, else the sitemap's origin
    include: tuple[str, ...] = ("**",)
    max_pages: int = Field(500, ge=1, le=100_000)
    requests_per_second: float = Field(2.0, gt=0, le=100)
    concurrency: int = Field(2, ge=1, le=16)
    recheck_minutes: float = Field(60.0, gt=0)

    @field_validator("sitemap_url", "start_url", "url_prefix")
    @classmethod
    def _is_http_url(cls, url: str | None, info) -> str | None:
        return None if url is None else _check_http_url(info.field_name, url)

    @model_validator(mode="after")
    def _has_a_seed(self) -> "WebSource":
        if not (self.sitemap_url or self.start_url):
            raise ValueError("a web source needs sitemap_url or start_url")
        return self

    @property
    def prefix(self) -> str:
        """Only URLs starting with this are fetched."""
        if self.url_prefix:
            return self.url_prefix
        if self.start_url:
            return (
                self.start_url.rsplit("/", 1)[0] + "/"
                if urlsplit(self.start_url).path.count("/")
                else self.start_url + "/"
            )
        seed = urlsplit(self.sitemap_url or "")
        return f"{seed.scheme}://{seed.netloc}/"


Source = Annotated[GitHubSource | LocalSource | WebSource, Field(discriminator="kind")]


class _SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[Source]


def load_sources(path: Path) -> list[GitHubSource | LocalSource | WebSource]:
    """Read and validate the sources file; raise SourcesFileError naming what is wrong."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourcesFileError(f"{path}: sources file not found (set RAG_SOURCES_FILE)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SourcesFileError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
        raise SourcesFileError(f"{path}: expected a mapping with a 'sources' list")
    try:
        sources = _SourcesFile.model_validate(document).sources
    except ValidationError as error:
        raise SourcesFileError(_describe(path, document, error)) from None
    _reject_duplicates(path, sources)
    return [_resolve_local_path(path, s) for s in sources]


def _describe(path: Path, document: dict, error: ValidationError) -> str:
    problems = []
    for issue in error.errors():
        location = list(issue["loc"])
        where = "sources file"
        if len(location) >= 2 and location[0] == "sources" and isinstance(location[1], int):
            index = location[1]
            entry = document["sources"][index]
            name = entry.get("name") if isinstance(entry, dict) else None
            where = f"source #{index + 1}" + (f" ({name!r})" if name else "")
            location = [part for part in location[2:] if part not in KINDS]
        field = ".".join(str(part) for part in location) or "entry"
        message = issue["msg"].removeprefix("Value error, ")
        if issue["type"] == "extra_forbidden" and SECRET_FIELD_PATTERN.search(field):
            message = (
                "secrets never go in the sources file: "
                "put it in an environment variable and name that with token_env"
            )
        if issue["type"] == "union_tag_invalid":
            field, message = (
                "kind",
                f"unknown kind {issue['input'].get('kind')!r}; expected one of: {', '.join(KINDS)}",
            )
        problems.append(f"{path}: {where}: field '{field}': {message}")
    return "\n".join(problems)


def _reject_duplicates(path: Path, sources: list) -> None:
    seen: set[str] = set()
    for index, source in enumerate(sources):
        if source.name in seen:
            raise SourcesFileError(
                f"{path}: source #{index + 1} ({source.name!r}): field 'name': duplicate name {source.name!r}"
            )
        seen.add(source.name)


def _resolve_local_path(sources_file: Path, source):
    if isinstance(source, LocalSource) and not source.path.is_absolute():
        return source.model_copy(update={"path": (sources_file.parent / source.path).resolve()})
    return source


def find_source(sources: list, name: str):
    """The source called `name`, or a SourcesFileError listing the ones that exist."""
    for source in sources:
        if source.name == name:
            return source
    known = ", ".join(s.name for s in sources) or "none"
    raise SourcesFileError(f"no source named {name!r} in the sources file (configured: {known})")
