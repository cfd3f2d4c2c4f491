"""RAG_EXECUTOR: the default executor of every job, and the integrations imported only when used.

The code location is loaded the way Dagster loads it (a fresh interpreter importing
`rag_assets.definitions`, the variable in its environment). A missing extra is simulated the way
Python itself marks a module as absent: `sys.modules[name] = None` makes its import fail.
"""

import os
import subprocess
import sys

import dagster as dg
import pytest

from rag_assets.definitions import INGEST_CELERY_JOB, INGEST_JOB, INGEST_K8S_JOB, build_definitions
from rag_assets.settings import Settings

INTEGRATIONS = ("dagster_celery", "dagster_k8s", "celery", "kubernetes", "dagster_postgres")


def definitions_with(executor: str | None) -> dg.Definitions:
    env = {} if executor is None else {"RAG_EXECUTOR": executor}
    return build_definitions(Settings.from_env(env))


def executor_names(defs: dg.Definitions) -> dict[str, str]:
    """Job name -> its executor, for every job: those the sensors and schedules target, and the
    implicit asset job the UI's Materialize launches, among them."""
    names = {job.name: job.executor_def.name for job in defs.resolve_all_job_defs()}
    targets = {t.job_name for s in defs.sensors for t in s.targets} | {s.job_name for s in defs.schedules}
    assert targets and targets <= set(names)
    return names


@pytest.mark.parametrize(
    ("variable", "expected"), [(None, "in_process"), ("celery", "celery"), ("K8s", "k8s")]
)
def test_rag_executor_sets_the_executor_of_every_job_but_the_two_fixed_scale_out_jobs(variable, expected):
    names = executor_names(definitions_with(variable))
    assert names.pop(INGEST_CELERY_JOB) == "celery" and names.pop(INGEST_K8S_JOB) == "k8s"
    assert INGEST_JOB in names and "__ASSET_JOB" in names and "freshness_check_job" in names
    assert set(names.values()) == {expected}, names


def test_a_bad_rag_executor_is_refused_naming_the_variable_and_the_choices():
    with pytest.raises(ValueError, match=r"RAG_EXECUTOR='gpu': expected one of in_process, celery, k8s"):
        Settings.from_env({"RAG_EXECUTOR": "gpu"})


def load_code_location(executor: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = (
        f"{prelude}\nimport sys\nimport rag_assets.definitions as d\n"
        f"print(sorted(m for m in {INTEGRATIONS!r} if m in sys.modules))\n"
        "print(d.defs.resolve_job_def('ingest_job').executor_def.name)"
    )
    env = {**os.environ, "RAG_EXECUTOR": executor}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize("executor", ["in_process", "celery", "k8s"])
def test_loading_the_code_location_imports_no_integration(executor):
    result = load_code_location(executor)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", executor]


@pytest.mark.parametrize(("executor", "module"), [("celery", "dagster_celery"), ("k8s", "dagster_k8s")])
def test_without_its_extra_the_executor_fails_to_load_in_one_line_naming_the_extra(executor, module):
    result = load_code_location(executor, prelude=f"import sys; sys.modules[{module!r}] = None")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ImportError: the {executor} executor needs {module}: pip install 'rag_assets[{executor}]'"
    )
    # Without the extra and without RAG_EXECUTOR, the code location loads as before.
    lean = load_code_location("in_process", prelude=f"import sys; sys.modules[{module!r}] = None")
    assert lean.returncode == 0, lean.stderr
