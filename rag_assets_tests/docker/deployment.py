"""The files of docker/, read the way Compose and Docker read them, for the tests beside this module.

Compose interpolates `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
`${VAR:+alt}`, `${VAR+alt}` and `$VAR` in string values (not in keys, not in comments), and `$$` is
a literal dollar: the same rules are applied here so a test sees the values a container would get.
"""

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
DOCKERFILE = DOCKER_DIR / "Dockerfile"

# The image every project container runs, as compose.yaml names it (before interpolation).
PROJECT_IMAGE_PREFIX = "${RAG_IMAGE:-rag-assets}:"

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    """A `${VAR:?message}` (or `${VAR?message}`) whose variable is not set."""


@dataclass(frozen=True)
class Reference:
    """One `${...}` in the compose file: the variable, its operator (`:-`, `:?`...) and argument."""

    name: str
    op: str | None
    arg: str

    @property
    def default(self) -> str | None:
        return self.arg if self.op in (":-", "-") else None

    @property
    def required(self) -> bool:
        return self.op in (":?", "?")


def references(text: str) -> Iterator[Reference]:
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        name = match["braced"] or match["bare"]
        yield Reference(name, match["op"], match["arg"] or "")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` with every reference replaced as Compose would, given the variables in `env`."""

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        ref = Reference(match["braced"] or match["bare"], match["op"], match["arg"] or "")
        value = env.get(ref.name)
        is_set, non_empty = value is not None, bool(value)
        present = non_empty if ref.op and ref.op.startswith(":") else is_set
        if ref.op in (":-", "-"):
            return value if present else ref.arg
        if ref.op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{ref.name}: {ref.arg}")
            return value
        if ref.op in (":+", "+"):
            return ref.arg if present else ""
        return value or ""

    return _REFERENCE.sub(replace, text)


def walk_strings(node) -> Iterator[str]:
    """Every string value in a parsed YAML document (mapping keys excluded, as Compose does)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)


def map_strings(node, fn):
    if isinstance(node, str):
        return fn(node)
    if isinstance(node, Mapping):
        return {key: map_strings(value, fn) for key, value in node.items()}
    if isinstance(node, list):
        return [map_strings(item, fn) for item in node]
    return node


@cache
def raw_compose() -> dict:
    """compose.yaml as written: anchors and merge keys resolved, `${...}` left in place."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_references() -> list[Reference]:
    return [ref for text in walk_strings(raw_compose()) for ref in references(text)]


def compose(env: Mapping[str, str]) -> dict:
    """compose.yaml as Compose resolves it with the variables `env` (a copy; safe to change)."""
    return map_strings(raw_compose(), lambda text: interpolate(text, env))


@dataclass(frozen=True)
class EnvExample:
    """docker/.env.example: the variables it sets, and those it only documents (`# NAME=value`)."""

    assigned: dict[str, str]
    documented: dict[str, str]

    @property
    def names(self) -> set[str]:
        return set(self.assigned) | set(self.documented)


_ASSIGNMENT = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@cache
def env_example() -> EnvExample:
    assigned: dict[str, str] = {}
    documented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            target = documented if match["comment"] else assigned
            target[match["name"]] = match["value"].strip()
    return EnvExample(assigned, documented)


def deployed_compose() -> dict:
    """compose.yaml resolved with the values of .env.example: what `docker compose up` would run."""
    return compose(env_example().assigned)


def project_services(services: Mapping[str, dict]) -> dict[str, dict]:
    """The services that run rag_assets code: those on the project image (CPU or CUDA)."""
    return {name: svc for name, svc in services.items() if _is_project_image(svc.get("image", ""))}


def _is_project_image(image: str) -> bool:
    if image.startswith(PROJECT_IMAGE_PREFIX):
        return True
    expected = interpolate(PROJECT_IMAGE_PREFIX, env_example().assigned)
    return image.startswith(expected)


def argv(command) -> list[str]:
    """A service's command or healthcheck test as an argument list."""
    if isinstance(command, str):
        return shlex.split(command)
    if command and command[0] in ("CMD", "CMD-SHELL"):
        return shlex.split(command[1]) if command[0] == "CMD-SHELL" else list(command[1:])
    return list(command)


def option(args: list[str], *flags: str) -> str:
    """The value after the first of `flags` in `args` (`-p 4000` -> "4000")."""
    for i, arg in enumerate(args[:-1]):
        if arg in flags:
            return args[i + 1]
    raise AssertionError(f"none of {flags} in {args}")


def options(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == flag]


def container_ports(service: dict) -> set[int]:
    """The ports a service's container publishes (targets of `ports`) or exposes."""
    ports = {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}
    return ports | {int(str(p).split("/")[0]) for p in service.get("expose", [])}


def named_volume_mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume, for the short-syntax volume mounts of a service."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if not source.startswith((".", "/", "~", "$")):
            mounts[target] = source
    return mounts


def bind_mounts(service: dict) -> dict[str, tuple[str, str]]:
    """Container path -> (host path, mode), for the short-syntax bind mounts of a service."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        if source.startswith((".", "/", "~")):
            mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    """The ENV and ARG values the Dockerfile sets (ARG: its default)."""
    env = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def copy_sources_and_target(arguments: str) -> tuple[list[str], str]:
    parts = [p for p in shlex.split(arguments) if not p.startswith("--")]
    return parts[:-1], parts[-1]
