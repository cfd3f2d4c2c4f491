"""`rag-assets bench` end to end on a tiny corpus: the table is right (timings are not judged here)."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rag_assets_tests.helpers import SAMPLE_DOCS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
]  # every stage of the benchmark; its own deadline is 600 s


def snapshot(path: Path, files: dict[str, str]) -> Path:
    """A tarball shaped like `git archive --prefix=docs-1.0/`."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"docs-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_bench_reports_every_stage_with_consistent_counts_and_ratios(tmp_path):
    old = {f"docs/{p.name}": p.read_text() for p in SAMPLE_DOCS.glob("*.md")}
    old["docs/logo.png"] = "not selected"
    new = dict(old)
    del new["docs/searching.md"]
    new["docs/configuration.md"] = old["docs/configuration.md"].replace(
        "Milvus Lite file", "Milvus Lite database"
    )
    out = tmp_path / "bench.json"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag_assets.cli",
            "bench",
            "--corpus",
            str(snapshot(tmp_path / "old.tar.gz", old)),
            "--update",
            str(snapshot(tmp_path / "new.tar.gz", new)),
            "--include",
            "docs/**/*.md",
            "--api-latency-ms",
            "5",
            "--fp32-reference",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAG_DATA_DIR": str(tmp_path / "unused")},
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert list(stages) == [
        "bare_encode",
        "bare_embed",
        "bare_encode_fp32",
        "cold",
        "warm",
        "incremental",
        "naive",
    ]
    chunks = stages["bare_encode"]["chunks_embedded"]
    assert chunks > 10
    assert (
        stages["cold"]["chunks_embedded"]
        == stages["cold"]["rows_written"]
        == stages["naive"]["chunks_embedded"]
        == chunks
    )
    assert (
        stages["cold"]["tokens"]
        == stages["bare_encode"]["tokens"]
        == stages["bare_embed"]["tokens"]
        == stages["naive"]["tokens"]
    )
    assert (
        stages["warm"]["chunks_embedded"],
        stages["warm"]["rows_written"],
        stages["warm"]["rows_deleted"],
    ) == (0, 0, 0)
    incremental = stages["incremental"]
    assert incremental["chunks_embedded"] == incremental["rows_written"] == 1  # the one edited section
    assert incremental["rows_deleted"] == 1 + 3  # its old version, and searching.md's three sections
    assert stages["naive"]["api_requests"] == 5  # one tree listing, then one request per page
    fp32 = stages["bare_encode_fp32"]
    assert fp32["chunks_embedded"] == -(-chunks // 4) and fp32["cosine_vs_reduced_mean"] > 0.99
    assert report["ratios"]["cold_vs_fp32_bare_tokens_per_s"] > 0
    for name, (a, b) in {
        "cold/bare_encode": ("cold", "bare_encode"),
        "cold/bare_embed": ("cold", "bare_embed"),
        "naive/cold": ("naive", "cold"),
        "warm/cold": ("warm", "cold"),
        "incremental/cold": ("incremental", "cold"),
    }.items():
        assert abs(report["ratios"][name] - stages[a]["wall_s"] / stages[b]["wall_s"]) < 0.01
    assert all(row["peak_rss_mb"] > 100 and "load_avg_1m" in row for row in stages.values())
    assert report["env"]["device"] == "cpu" and report["env"]["api_latency_ms"] == 5
    assert {"torch", "dagster", "pymilvus", "sentence-transformers"} <= set(report["env"]["versions"])
    assert "cold/bare_encode" in result.stdout and "incremental" in result.stdout
