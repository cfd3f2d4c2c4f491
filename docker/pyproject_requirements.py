"""Print the dependencies of pyproject.toml as a requirements file, one per line.

The image installs its dependencies from pyproject.toml alone, before the source is copied, so the
dependency layer is rebuilt only when the dependencies change. torch is installed on its own first,
from the wheel index the build chooses (CPU or CUDA), so `--only torch` and `--exclude torch` split
the list in two.

    python docker/pyproject_requirements.py [--only NAME | --exclude NAME] [PYPROJECT]
"""

import argparse
import re
import sys
import tomllib

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement (`Pandas>=2` -> `pandas`)."""
    match = NAME.match(requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def select(requirements: list[str], *, only: str | None = None, exclude: str | None = None) -> list[str]:
    """The requirements named `only`, or all but those named `exclude`, in pyproject order."""
    if only is not None:
        return [r for r in requirements if requirement_name(r) == requirement_name(only)]
    if exclude is not None:
        return [r for r in requirements if requirement_name(r) != requirement_name(exclude)]
    return list(requirements)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--only", metavar="NAME")
    group.add_argument("--exclude", metavar="NAME")
    parser.add_argument("pyproject", nargs="?", default="pyproject.toml")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        requirements = tomllib.load(f)["project"]["dependencies"]
    selected = select(requirements, only=args.only, exclude=args.exclude)
    if not selected:
        parser.error(f"no dependency selected from {args.pyproject}")
    sys.stdout.write("".join(f"{r}\n" for r in selected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
