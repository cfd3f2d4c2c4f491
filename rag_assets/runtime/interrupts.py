"""Ctrl-C and SIGTERM during a command: stop soon, say one line, exit 130 or 143, no traceback.

Three things stand in the way, and `Interrupts` deals with each:

- SIGTERM's default action ends the process at once, without a word. Here it is an interrupt
  like SIGINT (KeyboardInterrupt), so the command can say what it kept. A signal the command was
  started ignoring stays ignored (a non-interactive shell starts background jobs ignoring SIGINT,
  so that Ctrl-C stops the script and not them; Dagster still catches it during a run).
- While a run executes, Dagster replaces the handlers of both signals with its own (an interrupt
  fails the step under way with DagsterExecutionInterruptedError, and the run fails). Which signal
  it was is then known only to the process: a wakeup file descriptor (`signal.set_wakeup_fd`)
  receives the number of every signal whatever Python handler runs, and `received()` reads it.
- Dagster's compute-log capture starts helper processes for each run (`tail -F` and a Python
  watcher, dagster/_core/execution/compute_logs.py) in the command's process group, so Ctrl-C at a
  terminal reaches them too and the watcher printed a KeyboardInterrupt traceback. They are started
  in a process group of their own instead: a terminal's Ctrl-C reaches only the command, which
  stops them as usual when its run ends (and the watcher still stops `tail` if the command dies).
"""

import functools
import os
import signal
import subprocess
import threading
import types

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report


class Interrupts:
    """Within `with Interrupts() as interrupts:`, SIGINT and SIGTERM raise KeyboardInterrupt (or
    interrupt a Dagster step), and `interrupts.received()` says which one came last, if any."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._saved: dict = {}

    def __enter__(self) -> "Interrupts":
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        if threading.current_thread() is not threading.main_thread():  # only there can handlers be set
            return self
        self._saved_wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for number in SIGNALS:
            if signal.getsignal(number) is not signal.SIG_IGN:  # a job started in the background
                self._saved[number] = signal.signal(number, _raise_interrupt)  # keeps ignoring Ctrl-C
        return self

    def __exit__(self, *exc) -> None:
        self.received()
        for number, handler in self._saved.items():
            signal.signal(number, handler)
        if hasattr(self, "_saved_wakeup"):
            signal.set_wakeup_fd(self._saved_wakeup)
        os.close(self._read)
        os.close(self._write)

    def received(self) -> int | None:
        """The last of SIGINT and SIGTERM this process received so far (None: neither)."""
        try:
            while data := os.read(self._read, 512):
                found = [n for n in data if n in SIGNALS]
                self._last = found[-1] if found else self._last
        except BlockingIOError:
            pass
        return self._last

    def exit_code(self) -> int:
        return EXIT_CODES.get(self.received() or signal.SIGINT, 130)


def _raise_interrupt(number: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(number).name)


@functools.cache
def start_log_helpers_in_their_own_process_group() -> None:
    """Point Dagster's compute-log module at a `subprocess` whose Popen starts each process in a new
    process group (once per process; its helpers are `tail` and a watcher script, nothing else).
    Called before the first run, not on entering `Interrupts`: a command that runs nothing never
    imports Dagster."""
    try:
        from dagster._core.execution import compute_logs
    except ImportError:  # moved in another Dagster: runs work as before, Ctrl-C may print its helpers' traces
        return
    if getattr(compute_logs, "subprocess", None) is subprocess:
        own_group = types.SimpleNamespace(**vars(subprocess))
        own_group.Popen = functools.partial(subprocess.Popen, process_group=0)
        compute_logs.subprocess = own_group
