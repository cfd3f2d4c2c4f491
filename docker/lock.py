"""The image's lock: docker/requirements.lock, every package pinned with its hashes, made by uv.

    pip install uv && python docker/lock.py compile   # after changing dependencies in pyproject.toml
    python docker/lock.py check                       # offline: is the lock in step? (CI runs this)

`compile` resolves `pyproject.toml` with the `[all]` extra (Celery, Kubernetes, PostgreSQL) for
CPython 3.11 on manylinux x86_64, from PyPI, with torch constrained to docker/torch.txt. torch and
the CUDA-only packages only torch needs (nvidia-*, cuda-*, triton) are left out of the lock: the
Dockerfile installs docker/torch.txt first from the wheel index its TORCH_INDEX build arg names
(the CPU build, or a CUDA build with its CUDA libraries), then the lock with `--require-hashes
--no-deps`. PyPI's Linux torch is a CUDA build, so locking it would put CUDA into the CPU image.

`check` does not resolve (no network): the lock's header holds a sha256 of everything `compile`
reads (the dependencies and extras of pyproject.toml, docker/torch.txt, the uv arguments), and
every requirement of pyproject.toml must be met by the version the lock pins.
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "docker" / "requirements.lock"
TORCH = ROOT / "docker" / "torch.txt"
EXTRAS = ("all",)
UV_ARGS = (
    "--generate-hashes",
    "--python-version=3.11",
    "--python-platform=x86_64-manylinux_2_28",
    "--index-url=https://pypi.org/simple",
    "--no-config",
    "--no-header",
    "--no-annotate",
)
# Installed with torch from TORCH_INDEX, never from the lock.
FROM_TORCH_INDEX = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
INPUTS_PREFIX = "# inputs-sha256: "
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def inputs_digest(pyproject: Path = PYPROJECT, torch: Path = TORCH) -> str:
    """sha256 of what the lock is compiled from: a change to any of it means a stale lock."""
    project = tomllib.loads(pyproject.read_text())["project"]
    inputs = {
        "dependencies": project["dependencies"],
        # The test tools never go into the image: changing them leaves the lock as it is.
        "optional-dependencies": {
            k: v for k, v in project.get("optional-dependencies", {}).items() if k != "test"
        },
        "requires-python": project.get("requires-python"),
        "torch": torch.read_text().split(),
        "extras": EXTRAS,
        "uv": UV_ARGS,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def pins(lock_text: str) -> dict[str, str]:
    return {normalise(m[1]): m[2] for line in lock_text.splitlines() if (m := PIN.match(line))}


def drop_torch_index_packages(lock_text: str) -> str:
    """The lock without the entries (a pin line and its hash lines) that TORCH_INDEX provides."""
    kept, skipping = [], False
    for line in lock_text.splitlines():
        if match := PIN.match(line):
            skipping = bool(FROM_TORCH_INDEX.match(normalise(match[1])))
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


def compile_lock() -> int:
    command = ["uv", "pip", "compile", str(PYPROJECT), *(f"--extra={e}" for e in EXTRAS)]
    command += [*UV_ARGS, f"--constraint={TORCH}"]
    resolved = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if resolved.returncode != 0:
        sys.stderr.write(resolved.stderr)
        return resolved.returncode
    torch_pin = pins(resolved.stdout).get("torch")
    header = [
        "# The image's dependencies, pinned with hashes: `python docker/lock.py compile` (uv) wrote it",
        f"# from pyproject.toml [{','.join(EXTRAS)}]. torch=={torch_pin} and its CUDA packages come from",
        "# TORCH_INDEX (docker/torch.txt), not from here. Do not edit by hand.",
        f"{INPUTS_PREFIX}{inputs_digest()}",
    ]
    LOCK.write_text("\n".join(header) + "\n" + drop_torch_index_packages(resolved.stdout))
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(pins(LOCK.read_text()))} packages")
    return 0


def check_lock(pyproject: Path = PYPROJECT, lock: Path = LOCK, torch: Path = TORCH) -> list[str]:
    """What is out of step between pyproject.toml and the lock; empty when they agree."""
    if not lock.is_file():
        return [f"{lock.name} is missing"]
    text = lock.read_text()
    problems = []
    recorded = next(
        (ln[len(INPUTS_PREFIX) :] for ln in text.splitlines() if ln.startswith(INPUTS_PREFIX)), ""
    )
    if recorded != inputs_digest(pyproject, torch):
        problems.append(f"{pyproject.name} or {torch.name} changed since {lock.name} was compiled")
    pinned = pins(text)
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    wanted = [
        *project["dependencies"],
        *(r for e in ("celery", "k8s", "postgres") for r in extras.get(e, [])),
    ]
    for requirement in map(Requirement, wanted):
        name = normalise(requirement.name)
        if FROM_TORCH_INDEX.match(name):
            continue
        if name not in pinned:
            problems.append(f"{requirement} is not in {lock.name}")
        elif not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{requirement} is not met by {name}=={pinned[name]} in {lock.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("compile", "check"))
    args = parser.parse_args(argv)
    if args.command == "compile":
        return compile_lock()
    problems = check_lock()
    for problem in problems:
        print(f"docker/requirements.lock is out of step: {problem}", file=sys.stderr)
    if problems:
        print("run: pip install uv && python docker/lock.py compile", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
