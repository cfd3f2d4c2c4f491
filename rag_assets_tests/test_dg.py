"""`dg` (dagster-dg-cli) knows the project: `dg list defs`, run as a user runs it, lists the code location."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag_assets.definitions import defs

ROOT = Path(__file__).parents[1]
DG = Path(sys.executable).parent / "dg"  # installed with the `[dg]` extra (and `[test]`)


@pytest.mark.slow
def test_dg_list_defs_lists_the_seven_assets_jobs_and_sensors_of_the_code_location(env):
    result = subprocess.run(
        [str(DG), "list", "defs", "--json"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    listed = json.loads(result.stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert assets == {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert len(assets) == 7
    assert {"ingest_job", "ingest_celery_job", "ingest_k8s_job"} <= {j["name"] for j in listed["jobs"]}
    assert {s["name"] for s in listed["sensors"]} == {s.name for s in defs.sensors}
