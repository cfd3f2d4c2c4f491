"""Wall time and peak resident memory of one benchmark stage (this process and its workers)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

SAMPLE_SECONDS = 0.05


@dataclass
class StageResult:
    wall_s: float = 0.0
    tokens: int = 0
    chunks_embedded: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        row = {k: v for k, v in vars(self).items() if k != "extra"}
        row["wall_s"] = round(self.wall_s, 3)
        row["tokens_per_s"] = round(self.tokens / self.wall_s, 1) if self.wall_s and self.tokens else 0.0
        return {**row, **self.extra}


@contextmanager
def measured(result: StageResult) -> Iterator[StageResult]:
    """Fill result.wall_s and result.peak_rss_mb for the block (RSS sampled every 50 ms)."""
    sampler = _PeakRss()
    sampler.start()
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.wall_s = time.perf_counter() - started
        result.peak_rss_mb = round(sampler.stop() / 2**20, 1)


class _PeakRss(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self._process = psutil.Process()
        self._stop_event = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self._tree_rss())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._tree_rss())

    def _tree_rss(self) -> int:
        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
