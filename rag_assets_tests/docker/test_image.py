"""docker/Dockerfile: a cached dependency layer from the lock, then the source; CPU or CUDA torch."""

import posixpath
import re
import tomllib

from rag_assets_tests.docker.deployment import (
    DOCKER_DIR,
    REPO,
    argv,
    copy_sources_and_target,
    deployed_compose,
    dockerfile_env,
    dockerfile_instructions,
    option,
)


def index_of(predicate) -> int:
    matches = [i for i, instruction in enumerate(dockerfile_instructions()) if predicate(*instruction)]
    assert matches, "no such instruction"
    return matches[0]


def copied_files() -> dict[str, str]:
    """Absolute path in the image -> source path in the repository, for every COPY."""
    env, workdir, files = dockerfile_env(), "/", {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, arguments)
        if keyword != "COPY":
            continue
        sources, target = copy_sources_and_target(re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], arguments))
        target = posixpath.join(workdir, target)
        for source in sources:
            path = posixpath.join(target, posixpath.basename(source)) if target.endswith("/") else target
            files[posixpath.normpath(path)] = source
    return files


def pyproject_dependencies() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_the_image_is_python_3_11_slim():
    assert dockerfile_instructions()[0] == ("FROM", "python:3.11-slim")


def test_dependencies_are_installed_from_the_lock_alone_before_the_source_is_copied():
    copy_lock = index_of(lambda k, a: k == "COPY" and "docker/requirements.lock" in a)
    install_deps = index_of(lambda k, a: k == "RUN" and "-r deps/requirements.lock" in a)
    copy_source = index_of(lambda k, a: k == "COPY" and "rag_assets" in copy_sources_and_target(a)[0])
    install_project = index_of(lambda k, a: k == "RUN" and "pip install --no-deps ." in a)
    assert copy_lock < install_deps < copy_source < install_project
    _, install = dockerfile_instructions()[install_deps]
    assert "pip install --require-hashes --no-deps -r deps/requirements.lock" in install
    assert install.rstrip().endswith("pip check")
    # The dependency layer sees no source file, so editing the code never invalidates it.
    for keyword, arguments in dockerfile_instructions()[: install_deps + 1]:
        if keyword == "COPY":
            assert all(not s.startswith(("rag_assets", ".")) for s in copy_sources_and_target(arguments)[0])


def test_torch_comes_first_from_the_wheel_index_the_build_chooses_cpu_by_default():
    assert dockerfile_env()["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    _, install = dockerfile_instructions()[index_of(lambda k, a: k == "RUN" and "deps/torch.txt" in a)]
    torch_install = install.index('pip install --index-url "${TORCH_INDEX}" -r deps/torch.txt')
    assert torch_install < install.index("-r deps/requirements.lock")
    assert copied_files()["/opt/dagster/app/deps/torch.txt"] == "docker/torch.txt"


def test_compose_builds_a_cuda_image_for_the_gpu_worker_from_the_same_dockerfile():
    services = deployed_compose()["services"]
    cpu, cuda = services["code_location"]["build"], services["gpu_worker"]["build"]
    assert cpu["dockerfile"] == cuda["dockerfile"] == "docker/Dockerfile"
    assert cpu["context"] == cuda["context"] == ".."
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", cuda["args"]["TORCH_INDEX"])


def test_dagster_libraries_are_pinned_to_the_release_paired_with_dagster():
    (dagster_pin,) = [d for d in pyproject_dependencies() if d.startswith("dagster==")]
    major, minor, patch = dagster_pin.removeprefix("dagster==").split(".")
    assert major == "1"
    library_version = f"0.{int(minor) + 16}.{patch}"  # dagster 1.13.27 <-> libraries 0.29.27
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(
        re.fullmatch(r"([\w-]+)(?:\[[\w,]+\])?==(\S+)", requirement).groups()
        for name in ("celery", "k8s", "postgres")
        for requirement in extras[name]
    )
    assert pins == dict.fromkeys(("dagster-celery", "dagster-k8s", "dagster-postgres"), library_version)
    assert extras["celery"] == [f"dagster-celery[redis]=={library_version}"]


def test_every_file_a_compose_command_names_is_copied_into_the_image():
    files = copied_files()
    services = deployed_compose()["services"]
    assert files["/opt/dagster/home/dagster.yaml"] == "docker/dagster.yaml"
    assert dockerfile_env()["DAGSTER_HOME"] == "/opt/dagster/home"
    named = {option(argv(services[s]["command"]), "-w") for s in ("webserver", "daemon")}
    named |= {option(argv(services[s]["command"]), "-y") for s in ("cpu_worker", "gpu_worker")}
    assert named == {"/opt/dagster/app/docker/workspace.yaml", "/opt/dagster/app/docker/celery.yaml"}
    for path in named:
        assert files[path] == "docker/" + posixpath.basename(path)
    # The sources file is not among them: compose.yaml mounts it from the host (test_compose.py).


def test_the_build_context_keeps_every_path_the_dockerfile_copies():
    lines = (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for source in copied_files().values():
        assert source.split("/")[0] in kept, source
    assert "**" in lines  # everything else (.venv with torch, data dirs) stays out of the context


def test_the_image_runs_as_an_unprivileged_user_who_owns_the_volume_paths():
    env = dockerfile_env()
    assert ("USER", "dagster") in dockerfile_instructions()
    _, chown = next(i for i in dockerfile_instructions() if i[0] == "RUN" and "chown" in i[1])
    for path in (env["DAGSTER_HOME"], env["RAG_DATA_DIR"], "/opt/dagster/storage"):
        assert path in chown, path
