"""docker/requirements.lock: in step with pyproject.toml, hash-pinned, and without torch's CUDA build.

`python docker/lock.py check` is what CI runs (offline): these tests run it as a subprocess on the
repository, and on a copy whose pyproject.toml was changed, where it must fail and say why.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from rag_assets_tests.docker.deployment import DOCKER_DIR, REPO

LOCK = DOCKER_DIR / "requirements.lock"


def run_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "docker" / "lock.py"), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def copy_of_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "docker").mkdir(parents=True)
    for name in ("pyproject.toml", "docker/lock.py", "docker/torch.txt", "docker/requirements.lock"):
        shutil.copy(REPO / name, root / name)
    return root


def test_the_lock_is_in_step_with_pyproject():
    result = run_check(REPO)
    assert result.returncode == 0, result.stderr


def test_a_dependency_changed_in_pyproject_makes_the_check_fail_naming_the_fix(tmp_path):
    root = copy_of_repo(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"httpx>=0.27"', '"httpx>=9.0"'))
    result = run_check(root)
    assert result.returncode == 1
    assert "pyproject.toml or torch.txt changed since requirements.lock was compiled" in result.stderr
    assert "httpx>=9.0 is not met by httpx==" in result.stderr
    assert "python docker/lock.py compile" in result.stderr


def test_a_new_torch_pin_makes_the_check_fail(tmp_path):
    root = copy_of_repo(tmp_path)
    (root / "docker" / "torch.txt").write_text("torch==2.12.0\n")
    assert run_check(root).returncode == 1


def test_every_package_is_pinned_with_hashes_and_torch_and_cuda_come_from_torch_index():
    text = LOCK.read_text()
    entries = re.findall(
        r"^([A-Za-z0-9][\w.-]*)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text, re.M
    )
    names = {name.lower() for name, _, _ in entries}
    assert len(entries) == len(re.findall(r"^[A-Za-z0-9][\w.-]*==", text, re.M)) > 100
    assert {"dagster", "dagster-celery", "dagster-k8s", "dagster-postgres", "sentence-transformers"} <= names
    assert not {n for n in names if n == "torch" or n == "triton" or n.startswith(("nvidia-", "cuda-"))}
    assert (DOCKER_DIR / "torch.txt").read_text().split() == ["torch==2.13.0"]
