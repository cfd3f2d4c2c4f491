"""Step progress: what a reporter tells listeners and the run log, and how the CLI shows it."""

import io
import time

from rag_assets.core.progress import Reporter, StepProgress, listening
from rag_assets.runtime.console import ProgressDisplay


def test_listeners_see_every_update_and_the_log_gets_a_line_once_per_interval():
    seen, logged = [], []
    with listening(lambda p: seen.append((p.done, p.finished))):
        reporter = Reporter("embeddings", "chunks", 10, log=logged.append, log_every=0.2)
        reporter.advance(4, reused=True)  # cache hits: no log yet, the interval has not passed
        time.sleep(0.25)
        reporter.advance(2, tokens=300)
        reporter.advance(2, tokens=300)  # within the interval of the last line: not logged
        reporter.finish()
    reporter.advance(2)  # nobody listens any more

    assert seen == [(0, False), (4, False), (6, False), (8, False), (8, True)]
    assert (
        len(logged) == 1 and logged[0].startswith("embeddings: 6 / 10 chunks, ") and "tokens/s" in logged[0]
    )


def test_eta_counts_only_the_units_that_took_work():
    progress = StepProgress(
        "embeddings", "chunks", total=100, done=60, reused=50, started=time.monotonic() - 10
    )
    # 10 chunks took 10 s; the 40 left take about 40 s, however many came from the cache.
    assert 39 <= progress.eta_seconds <= 41
    assert progress.describe().endswith("ETA 40s")


def test_without_a_terminal_the_display_prints_a_plain_line_per_interval_and_at_the_end():
    stream = io.StringIO()
    with ProgressDisplay(stream, every=0.2):
        reporter = Reporter("chunks", "pages", 3)
        reporter.advance()
        time.sleep(0.25)
        reporter.advance()
        reporter.finish()

    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("chunks: 2 / 3 pages, ETA ")
    assert lines[1].startswith("chunks: 2 / 3 pages, done in ")
    assert len(lines) == 2


def test_on_a_terminal_the_display_draws_a_bar_per_step():
    stream = io.StringIO()
    with ProgressDisplay(stream, live=True):
        reporter = Reporter("embeddings", "chunks", 18)
        reporter.advance(18, tokens=900)
        reporter.finish()

    screen = stream.getvalue()
    assert "embeddings" in screen and "18/18" in screen and "tokens/s" in screen
