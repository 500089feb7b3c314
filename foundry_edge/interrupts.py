"""SIGINT, SIGTERM and SIGHUP as exceptions, so every `with` and `finally` unwinds and temporary files go.

Python's default SIGTERM and SIGHUP end the process on the spot: no message, and an export's temporary
folder stays behind. `handled()` (the CLI's `main`) turns them into `Interrupted`, SIGINT into its usual
KeyboardInterrupt. `deferred()` holds them while a finished output set is renamed into place
(foundry_edge.fileio.OutputSet), so a set is either all old or all new.

`signal_point(name)` is the test hook: with FOUNDRY_EDGE_SIGNAL_AT=NAME:SIG (e.g. export:checked:TERM) the
process sends itself SIG at that point, so a test interrupts a step exactly where it means to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

SIGNAL_AT_ENV = "FOUNDRY_EDGE_SIGNAL_AT"
HANDLED = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt: `except Exception` never swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 129 for SIGHUP


_state = {"depth": 0, "pending": None}


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def _handler(signum, _frame) -> None:
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Raise KeyboardInterrupt / Interrupted for the handled signals inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handler) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold the handled signals until the block ends, then raise the first that came."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            _raise_for(signum)


def signal_point(name: str) -> None:
    """Send this process the signal FOUNDRY_EDGE_SIGNAL_AT names for this point (tests only)."""
    where, _, which = os.environ.get(SIGNAL_AT_ENV, "").rpartition(":")
    if where == name:
        os.kill(os.getpid(), getattr(signal, "SIG" + which))
