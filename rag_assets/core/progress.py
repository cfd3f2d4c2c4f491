"""Progress of a step, told as it happens to whoever listens in this process and, every
`log_every` seconds, to a log function.

The CLI runs its Dagster runs in its own process (rag_assets/runtime/ingest.py) and listens here to draw its
progress display; the Dagster run log gets a line about every 10 s (`context.log.info`), so a run
launched from the UI shows it too. With no listener and no log, a reporter costs a clock read.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

DEFAULT_LOG_EVERY_SECONDS = 10.0

_listeners: list[Callable[["StepProgress"], None]] = []
_lock = threading.Lock()


@dataclass
class StepProgress:
    """Where one step stands: `done` of `total` units (None: not known yet), `reused` of them without
    work (cache hits, unchanged rows), `tokens` the model's tokens so far."""

    step: str
    unit: str
    total: int | None = None
    done: int = 0
    reused: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the pace of the work done so far (units reused cost nothing)."""
        worked = self.done - self.reused
        if self.total is None or worked <= 0 or self.finished:
            return None
        return (self.total - self.done) * self.seconds / worked

    def describe(self) -> str:
        """`embeddings: 1,200 / 11,664 chunks, 3,412 tokens/s, ETA 3m02s`."""
        line = f"{self.step}: {self.done:,}" + (f" / {self.total:,}" if self.total is not None else "")
        line += f" {self.unit}"
        if self.tokens:
            line += f", {self.tokens_per_s:,.0f} tokens/s"
        if self.finished:
            return line + f", done in {format_seconds(self.seconds)}"
        eta = self.eta_seconds
        return line + (f", ETA {format_seconds(eta)}" if eta is not None else "")


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


@contextmanager
def listening(listener: Callable[[StepProgress], None]) -> Iterator[None]:
    """Call `listener` with every update of every step in this process while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


class Reporter:
    """Reports one step's progress: `advance` as work is done, `finish` at the end."""

    def __init__(
        self,
        step: str,
        unit: str,
        total: int | None = None,
        *,
        log: Callable[[str], None] | None = None,
        log_every: float = DEFAULT_LOG_EVERY_SECONDS,
    ):
        self.progress = StepProgress(step, unit, total)
        self._log, self._log_every = log, log_every
        self._logged = time.monotonic()
        self._tell()

    def advance(self, units: int = 1, *, tokens: int = 0, reused: bool = False) -> None:
        self.progress.done += units
        self.progress.tokens += tokens
        if reused:
            self.progress.reused += units
        self._tell()
        if self._log and time.monotonic() - self._logged >= self._log_every:
            self._logged = time.monotonic()
            self._log(self.progress.describe())

    def expect(self, units: int) -> None:
        """More work is known to come (a step that learns its total source by source)."""
        self.progress.total = (self.progress.total or 0) + units
        self._tell()

    def finish(self) -> None:
        self.progress.finished = True
        if self.progress.total is None:
            self.progress.total = self.progress.done
        self._tell()

    def _tell(self) -> None:
        with _lock:
            listeners = list(_listeners)
        for listener in listeners:
            listener(self.progress)
