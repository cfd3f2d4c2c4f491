"""The CLI's live view of its runs' steps (rag_assets/core/progress.py): rich progress bars on a
terminal, a plain line every few seconds otherwise (a log file, CI, a pipe)."""

import os
import sys
import time

from rag_assets.core.progress import StepProgress, listening

PLAIN_EVERY_SECONDS = 5.0
LIVE_EVERY_SECONDS = 0.1


class ProgressDisplay:
    """Shows every step reporting progress in this process while the `with` block runs."""

    def __init__(self, stream=None, *, live: bool | None = None, every: float = PLAIN_EVERY_SECONDS):
        # Dagster points file descriptors 1 and 2 at its compute log files while a step runs: the
        # display writes to its own copy of stderr's descriptor, made now, which stays on the terminal.
        self._own = stream is None
        self.stream = stream or _own_stderr()
        self.live = self.stream.isatty() if live is None else live
        self.every = every
        self._tasks: dict[int, int] = {}
        self._shown: dict[int, float] = {}
        self._bars = None
        self._listening = listening(self.update)

    def __enter__(self) -> "ProgressDisplay":
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bars = Progress(
                TextColumn("{task.description:<18}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}  {task.fields[speed]}"),
                console=Console(file=self.stream),
            )
            self._bars.start()
        self._listening.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._listening.__exit__(*exc)
        if self._bars is not None:
            self._bars.stop()
        if self._own and self.stream is not sys.stderr:
            self.stream.close()

    def update(self, progress: StepProgress) -> None:
        now, key = time.monotonic(), id(progress)
        if self._bars is None and key not in self._shown:
            self._shown[key] = now  # plain output: a line every `every` seconds, and the last one
        if not progress.finished and now - self._shown.get(key, 0.0) < self._interval(key):
            return
        self._shown[key] = now
        if self._bars is None:
            self.stream.write(progress.describe() + "\n")
            self.stream.flush()
            return
        if key not in self._tasks:
            self._tasks[key] = self._bars.add_task(progress.step, total=progress.total, unit="", speed="")
        speed = progress.describe().partition(f" {progress.unit}")[2].lstrip(", ")
        self._bars.update(
            self._tasks[key], completed=progress.done, total=progress.total, unit=progress.unit, speed=speed
        )

    def _interval(self, key: int) -> float:
        return LIVE_EVERY_SECONDS if self._bars is not None else self.every


def _own_stderr():
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured in-process)
        return sys.stderr
