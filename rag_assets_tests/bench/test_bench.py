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
            "--precision",
            "bf16",  # a reduced precision, so both paths (cast weights, autocast) are timed
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
        "bare_embed_autocast",
        "bare_encode_fp32",
        "cold",
        "warm",
        "noop_cli_dagster",
        "noop_cli",
        "incremental",
        "naive",
    ]
    assert not stages["noop_cli_dagster"]["skipped"] and stages["noop_cli"]["skipped"]
    for name in ("cold", "warm", "incremental"):  # each run's time split by step, and outside the run
        split = stages[name]["split"]
        assert {"raw_pages", "chunks", "embeddings", "milvus_collection", "serving_collection"} <= set(
            split["steps"]
        )
        assert 0 < sum(split["steps"].values()) <= split["run_s"] <= stages[name]["wall_s"] + 0.01
    assert "split cold: outside the run" in result.stdout
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
    assert fp32["chunks_embedded"] == -(-chunks // 4)
    assert (fp32["reduced_precision"], fp32["cosine_vs_other_path_precision"]) == ("bf16", "bf16-autocast")
    assert fp32["cosine_vs_reduced_mean"] >= 0.999 and fp32["cosine_vs_other_path_mean"] >= 0.999
    assert stages["bare_embed_autocast"]["tokens"] == stages["bare_embed"]["tokens"]
    assert report["ratios"]["cold_vs_fp32_bare_tokens_per_s"] > 0
    for name, (a, b) in {
        "cold/bare_encode": ("cold", "bare_encode"),
        "cold/bare_embed": ("cold", "bare_embed"),
        "bare_embed_autocast/bare_embed": ("bare_embed_autocast", "bare_embed"),
        "naive/cold": ("naive", "cold"),
        "warm/cold": ("warm", "cold"),
        "incremental/cold": ("incremental", "cold"),
    }.items():
        assert abs(report["ratios"][name] - stages[a]["wall_s"] / stages[b]["wall_s"]) < 0.01
    assert all(row["peak_rss_mb"] > 100 and "load_avg_1m" in row for row in stages.values())
    assert report["env"]["device"] == "cpu" and report["env"]["api_latency_ms"] == 5
    assert {"torch", "dagster", "pymilvus", "sentence-transformers"} <= set(report["env"]["versions"])
    assert "cold/bare_encode" in result.stdout and "incremental" in result.stdout


@pytest.mark.slow
def test_the_update_as_a_command_is_timed_with_its_counts_and_its_split(tmp_path):
    old = {f"docs/{p.name}": p.read_text() for p in SAMPLE_DOCS.glob("*.md")}
    new = dict(old)
    del new["docs/searching.md"]
    new["docs/configuration.md"] = old["docs/configuration.md"].replace(
        "Milvus Lite file", "Milvus Lite database"
    )
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "rag_assets.cli", "bench", "--include", "docs/**/*.md"]
    command += ["--corpus", str(snapshot(tmp_path / "old.tar.gz", old))]
    command += ["--update", str(snapshot(tmp_path / "new.tar.gz", new))]
    stages = "bare_embed,cold_cli,incremental_cli"
    command += ["--stages", stages, "--workdir", str(tmp_path / "work"), "--out", str(out)]

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    cold = report["stages"]["cold_cli"]
    assert cold["rows_written"] == report["stages"]["bare_embed"]["chunks_embedded"] > 0  # every chunk
    assert cold["split"]["steps"]["embeddings"] > 0 and report["ratios"]["cold_cli/bare_embed"] > 0
    update = report["stages"]["incremental_cli"]
    assert (update["chunks_embedded"], update["rows_written"], update["rows_deleted"]) == (1, 1, 1 + 3)
    assert not update["skipped"]
    split = update["split"]
    assert {"raw_pages", "chunks", "embeddings", "milvus_collection", "serving_collection"} <= set(
        split["steps"]
    )
    assert 0 < split["run_s"] < update["wall_s"] and split["outside_run_s"] > 0  # the command's own costs
    assert "split cold_cli" in result.stdout and "split incremental_cli" in result.stdout


@pytest.mark.slow
def test_the_gpu_check_script_runs_end_to_end_as_a_cpu_dry_run(tmp_path):
    """rag_assets/bench/gpu_check.sh with DEVICE=cpu on two tiny snapshots: every figure it promises."""
    pages = {f"docs/{p.stem}.txt": p.read_text() for p in SAMPLE_DOCS.glob("*.md")}
    updated = {**pages, "docs/sources.txt": pages["docs/sources.txt"] + "\nOne more paragraph.\n"}
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(SAMPLE_DOCS.parents[1] / "rag_assets" / "bench" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "DEVICE": "cpu",
            "CORPUS": str(snapshot(tmp_path / "old.tar.gz", pages)),
            "UPDATE": str(snapshot(tmp_path / "new.tar.gz", updated)),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = (out / "summary.txt").read_text()
    for figure in ("bare_encode", "cold", "warm", "incremental", "naive", "embedding step:", "peak"):
        assert figure in summary, figure
    share = float(summary.split("embedding step: ")[1].split("(")[1].split("%")[0])
    assert 0 < share < 100
    assert json.loads((out / "bench.json").read_text())["stages"]["cold"]["chunks_embedded"] > 0


def test_backends_are_compared_with_fp32_torch_on_the_pipelines_chunks_and_the_cold_run_uses_backend(
    tmp_path,
):
    """`rag-assets bench --backends torch,onnx,onnx-int8,openvino --backend onnx-int8`: a row per
    backend after the fp32 torch reference, with tokens/s, agreement and recall; the pipeline stage
    ran on onnx-int8, exported into its data directory."""
    files = {f"docs/{p.name}": p.read_text() for p in SAMPLE_DOCS.glob("*.md")}
    out = tmp_path / "bench.json"

    corpus = snapshot(tmp_path / "c.tar.gz", files)
    result = subprocess.run(
        [sys.executable, "-m", "rag_assets.cli", "bench", "--corpus", str(corpus),
         "--include", "docs/**/*.md", "--stages", "cold", "--backend", "onnx-int8",
         "--backends", "torch,onnx,onnx-int8,openvino", "--precision", "bf16", "--device", "cpu",
         "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAG_DATA_DIR": str(tmp_path / "unused")},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = {row["backend"]: row for row in report["backends"]["rows"]}
    assert list(rows) == ["torch-fp32", "torch-bf16", "onnx", "onnx-int8", "openvino"]
    assert rows["torch-fp32"]["cosine_vs_fp32_mean"] == 1.0 and rows["torch-fp32"]["speedup_vs_fp32"] == 1.0
    chunks = report["stages"]["cold"]["chunks_embedded"]
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["cosine_vs_fp32_mean"] >= 0.99
        assert 0 < row["recall_at_1"] <= row["recall_at_5"] <= row["recall_at_10"] <= 1
    assert report["backends"]["chunks"] == chunks > 0 and report["env"]["backend"] == "onnx-int8"
    assert list((tmp_path / "work" / "data" / "cache" / "exports").glob("*/model_int8.onnx"))
    assert "backends on" in result.stdout and "openvino" in result.stdout
