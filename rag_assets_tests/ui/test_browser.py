"""The UI, driven by a real headless Chromium: the graph is shown, and Materialize writes Milvus.

`dagster dev -w workspace.yaml` runs on a temp instance (the repo's dagster.yaml) with a temp data
dir and a sources file naming one local source (a copy of the sample docs). The partition is
registered before the UI starts, so the registry sensor only records its baseline and requests
nothing: the one run that materializes the source is the one launched from the Materialize dialog.

Needs Playwright's Python package and a Chromium binary (Debian's `chromium`, never
`playwright install`); skipped with the reason where either is absent, a failure in CI. Screenshots
and the `dagster dev` log go to $RAG_TEST_ARTIFACTS (default: test-artifacts/ at the repo root).
"""

import os
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START_TAG

from rag_assets.partitions import source_partitions
from rag_assets.runtime.instance import ensure_pools
from rag_assets.settings import Settings
from rag_assets_tests.helpers import SAMPLE_DOCS, expected_chunks, milvus_rows
from rag_assets_tests.ui.dagster_dev import REPO, DagsterDev

# `dagster dev` starts, then a run is launched and followed in the UI: about 90 s on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.needs_service, pytest.mark.timeout(360)]

CHROMIUM = Path(os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(os.environ.get("RAG_TEST_ARTIFACTS") or REPO / "test-artifacts")
SOURCE = "ui_docs"
ASSETS = {"raw_pages", "chunks", "embeddings", "milvus_collection"}
EDGES = {
    ("raw_pages", "chunks"),
    ("chunks", "embeddings"),
    ("chunks", "milvus_collection"),
    ("embeddings", "milvus_collection"),
}
CHECKS = {"no_empty_chunks", "vector_dimension_matches_collection", "rows_match_chunks"}
UI_TIMEOUT_MS = 30_000
RUN_TIMEOUT_SECONDS = 180
GROUP_PATH = "/locations/rag_assets/asset-groups/ingestion/lineage"
PREVIEW_BREADCRUMB = "Architecture › The asset graph"  # a breadcrumb of the sample docs

# Screen positions of the graph's nodes (foreignObject boxes) and of both ends of its edges (SVG
# paths with an arrow marker), so the test can tell which node each drawn edge leaves and enters.
GRAPH_GEOMETRY_JS = """() => {
  const nodes = [...document.querySelectorAll('svg foreignObject')].map(fo => {
    const r = fo.getBoundingClientRect();
    // SVG elements have no innerText
    const text = (fo.firstElementChild && fo.firstElementChild.innerText) || '';
    const name = text.trim().split('\\n')[0].trim();
    return {name, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  });
  const edges = [...document.querySelectorAll('svg path[marker-end]')].flatMap(path => {
    const m = path.getScreenCTM();
    if (!m || !path.getTotalLength()) return [];
    const at = l => {
      const p = path.getPointAtLength(l);
      return {x: p.x * m.a + p.y * m.c + m.e, y: p.x * m.b + p.y * m.d + m.f};
    };
    return [{start: at(0), end: at(path.getTotalLength())}];
  });
  return {nodes, edges};
}"""


def sync_playwright_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (Debian), or set RAG_CHROMIUM")
    return sync_playwright


@pytest.fixture
def ui(tmp_path: Path):
    """`dagster dev` on a temp instance with one registered local source; stopped however the test ends."""
    sync_playwright = sync_playwright_or_skip()  # before anything starts: a skip costs nothing
    home, docs, data = tmp_path / "dagster_home", tmp_path / "docs", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    shutil.copytree(SAMPLE_DOCS, docs)
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(
        yaml.safe_dump(
            {"sources": [{"name": SOURCE, "kind": "local", "path": str(docs), "include": ["**/*.md"]}]}
        )
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(source_partitions.name, [SOURCE])
        ensure_pools(instance)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MILVUS_", "EMBEDDING_", "GITHUB_TOKEN", "DAGSTER_"))
    }
    env.update(RAG_DATA_DIR=str(data), RAG_SOURCES_FILE=str(sources_file))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dev = DagsterDev(home=home, env=env, log_path=tmp_path / "dagster-dev.log").start()
    try:
        dev.wait_ready(ASSETS)
        yield sync_playwright, dev, Settings.from_env(env), docs
    finally:
        strays = dev.stop()
        shutil.copy(dev.log_path, ARTIFACTS / "ui-dagster-dev.log")
        assert not strays, f"processes outlived dagster dev's process group and were killed: {strays}"


def drawn_edges(page) -> set[tuple[str, str]]:
    """(from, to) asset names of every edge drawn, matched to the nodes by the edge's two ends."""
    geometry = page.evaluate(GRAPH_GEOMETRY_JS)
    nodes = [n for n in geometry["nodes"] if n["name"] in ASSETS]

    def node_at(point, side):
        near = [
            n
            for n in nodes
            if n["top"] - 2 <= point["y"] <= n["bottom"] + 2 and abs(n[side] - point["x"]) <= 20
        ]
        return min(near, key=lambda n: abs(n[side] - point["x"]))["name"] if near else None

    pairs = {(node_at(e["start"], "right"), node_at(e["end"], "left")) for e in geometry["edges"]}
    return {p for p in pairs if None not in p}


def poll(what: str, probe, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def open_graph(page, base_url: str) -> None:
    page.goto(base_url + GROUP_PATH)
    for name in ASSETS:
        page.locator("svg foreignObject").filter(has_text=name).first.wait_for(state="visible")
    skip = page.get_by_role("button", name="Skip")  # the community sign-up dialog, should it still show
    if skip.is_visible():
        skip.click()


def runs_of(dev: DagsterDev, source: str) -> list[dict]:
    """Runs that materialize the source (a schedule's unpartitioned runs are not counted)."""
    return [
        r
        for r in dev.runs()
        if source in (r["tags"].get("dagster/partition"), r["tags"].get(RANGE_START_TAG))
    ]


def choose_partition_in_materialize_dialog(page, partition: str):
    """Open Materialize all…, pick one partition; retried from scratch, since nothing is launched yet."""
    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(3):
        try:
            page.get_by_role("button", name=re.compile("Materialize all")).click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            dialog.get_by_text("Select a partition or create one").click()
            page.get_by_placeholder("Filter partitions").fill(partition)
            page.get_by_role("menuitem", name=partition).click()
            dialog.get_by_text("Launch runs to materialize").click()  # closes the partition picker
            launch = dialog.get_by_role("button", name="Launch 1 run")
            launch.wait_for(state="visible")
            return launch
        except PlaywrightError:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
            page.reload()


def launch_from_the_materialize_dialog(page, dev: DagsterDev) -> dict:
    """Materialize all… for SOURCE; the run this created, checked to come from the UI."""
    choose_partition_in_materialize_dialog(page, SOURCE).click()
    page.get_by_text(re.compile("Launched run")).first.wait_for(state="visible")
    [run] = dev.wait_until("the launched run", lambda: runs_of(dev, SOURCE), 30)
    assert run["tags"].get("dagster/from_ui") == "true" and run["tags"].get("dagster/partition") == SOURCE
    return run


def wait_for_success_on_the_run_page(page, dev: DagsterDev, run_id: str) -> None:
    page.goto(f"{dev.url}/runs/{run_id}")
    status = dev.wait_for_run_end(run_id, RUN_TIMEOUT_SECONDS)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{dev.log_tail()}"
    page.get_by_text("Success", exact=True).first.wait_for(state="visible")  # the run's status tag
    page.get_by_text("RUN_SUCCESS").first.wait_for(state="visible")  # the event log caught up


def open_chunk_preview(page, dev: DagsterDev) -> None:
    page.goto(f"{dev.url}/assets/chunks?view=partitions&partition={SOURCE}")
    page.locator("tr").filter(has_text="preview").get_by_text("[Show Markdown]").click()
    page.get_by_role("dialog").filter(has_text=PREVIEW_BREADCRUMB).wait_for(state="visible")


def test_materialize_from_the_ui_writes_the_partition_to_milvus(ui):
    sync_playwright, dev, settings, docs = ui
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")  # no sign-up dialog
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.set_default_navigation_timeout(2 * UI_TIMEOUT_MS)
        try:
            open_graph(page, dev.url)
            assert poll("the graph's edges", lambda: (e := drawn_edges(page)) >= EDGES and e, 30) == EDGES
            page.screenshot(path=ARTIFACTS / "ui-graph.png")
            assert runs_of(dev, SOURCE) == [], "nothing may have materialized the source before the UI does"

            run = launch_from_the_materialize_dialog(page, dev)
            wait_for_success_on_the_run_page(page, dev, run["runId"])
            page.screenshot(path=ARTIFACTS / "ui-run.png")

            open_chunk_preview(page, dev)
            page.screenshot(path=ARTIFACTS / "ui-chunks-preview.png")
        except Exception:
            page.screenshot(path=ARTIFACTS / "ui-failure.png")
            raise
        finally:
            browser.close()
    assert [r["runId"] for r in runs_of(dev, SOURCE)] == [run["runId"]], (
        "the sensor must not have run the source too"
    )

    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        logs = lambda kind: instance.all_logs(run["runId"], of_type=kind)  # noqa: E731
        poll(
            "the run's process to exit (it holds the Milvus Lite file)",
            lambda: any(
                "Process for run exited" in (e.message or "") for e in logs(dg.DagsterEventType.ENGINE_EVENT)
            ),
            30,
        )
        evaluations = [
            e.dagster_event.event_specific_data for e in logs(dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
    assert {e.check_name for e in evaluations if e.passed} >= CHECKS

    [rows] = poll("Milvus Lite to open", lambda: _rows_or_none(settings), 30)
    assert {i: (r["path"], r["heading"], r["text"]) for i, r in rows.items()} == expected_chunks(SOURCE, docs)


def _rows_or_none(settings: Settings) -> list[dict] | None:
    try:
        return [milvus_rows(settings, SOURCE)]
    except Exception:
        return None
