"""SIGINT / SIGTERM during training: a checkpoint first, then exit 130 / 143."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupted", "StopRequest"]


class Interrupted(BaseException):
    """SIGINT or SIGTERM outside the training loop (start-up, final grid, evaluation), or a
    second Ctrl-C inside it. A BaseException, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + self.signum


class StopRequest:
    """SIGINT/SIGTERM handling for the whole of a training run. Inside the loop
    (:meth:`deferring`) a signal only sets a flag that the loop checks after each step, so an
    interrupted run saves a checkpoint and closes its W&B run before exiting; a second SIGINT
    aborts at once. Anywhere else a signal raises :class:`Interrupted` at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False
        self.where = "during start-up, before any checkpoint; start the run again"  # said with the message
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        if not self.deferred or (self.signum is not None and signum == signal.SIGINT):
            raise Interrupted(signum)
        self.signum = signum

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def deferring(self):
        self.deferred = True
        try:
            yield self
        finally:
            self.deferred = False
        if self.signum is not None:  # arrived during the loop: the checkpoint is saved by now
            raise Interrupted(self.signum)
