"""The terminal: one stderr console for progress, warnings and one-line errors, and a
stdout console for result tables."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.errors import MarkupError
from rich.text import Text



class LoggedConsole(Console):
    """A rich console whose printed lines also go, as plain text, to the ``gencompare``
    logger: inside a Hydra job that is the job's log file (``<run dir>/<task>.log``,
    ``hydra.job_logging``), so warnings, one-line errors and the progress lines off a
    terminal are in the log too. Outside a Hydra job (no logging set up) nothing is logged."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: D102 - Console.print
        super().print(*objects, **kwargs)
        if not logging.getLogger().handlers:
            return
        text = " ".join(str(o) for o in objects if isinstance(o, str))
        if not text.strip():
            return
        if kwargs.get("markup", True) is not False:
            try:
                text = Text.from_markup(text).plain
            except MarkupError:
                pass
        level = logging.ERROR if text.startswith(("error:", "job failed:")) else (
            logging.WARNING if text.startswith("warning:") else logging.INFO)
        logging.getLogger("gencompare").log(level, text)


console = LoggedConsole(stderr=True, soft_wrap=True)


def table_console() -> Console:
    """stdout console; wide enough off a terminal (logs, CI) that rows do not wrap."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def warn(message: str) -> None:
    """One yellow line on stderr."""
    console.print(f"[yellow]{message}[/]")


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_fields(step: int, total: int, stats: Mapping[str, float], eta_s: float | None, width: int) -> str:
    """``step/total``, the losses, the rate and the ETA in at most ``width`` characters:
    the step, the rate and the ETA always; as many losses (3 significant digits) as fit.
    ``stats`` maps loss names to values and ``"ex/s"`` to the rate."""
    rate = stats.get("ex/s")
    head = f"{step:,}/{total:,}"
    tail = (f" {rate:,.0f} ex/s" if rate is not None else "") + f" eta {_clock(eta_s)}"
    losses = ""
    for k, v in stats.items():
        if k == "ex/s":
            continue
        part = f" {k}={v:.3g}"
        if len(head) + len(losses) + len(part) + len(tail) > width:
            break
        losses += part
    return head + losses + tail


class TrainProgress:
    """Training progress on stderr. On a terminal: one live line (rich) that keeps the
    step, the losses, the rate and the ETA within the console's width (80 columns
    included; the bar takes what is left). Off a terminal (a pipe, a SLURM log): a plain
    line ``step 120/5,000 d_loss=0.693 ... 1,234 ex/s elapsed 0:00:10 eta 0:06:40`` at the
    first update with losses, then every ``every_s`` seconds, and at the last step.
    Disabled: nothing. Use as a context manager; :meth:`update` after each step."""

    def __init__(self, description: str, total: int, completed: int, *, enabled: bool, every_s: float = 30.0):
        self.description, self.total, self.start, self.enabled = description, total, completed, enabled
        self.every_s = every_s
        self.live = enabled and console.is_terminal
        self._last_line = -math.inf
        self._progress = None

    def __enter__(self) -> "TrainProgress":
        import time

        self.t0 = time.perf_counter()
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=None),
                                      TextColumn("{task.fields[line]}"), console=console, transient=False,
                                      expand=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.start,
                                                 line=f"{self.start:,}/{self.total:,}")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def eta(self, step: int) -> float | None:
        import time

        done, elapsed = step - self.start, time.perf_counter() - self.t0
        return (self.total - step) * elapsed / done if done > 0 else None

    def update(self, step: int, stats: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        import time

        if self._progress is not None:
            # the description, a bar of at least 7 cells and the spaces between take the rest
            room = max(30, console.width - len(self.description) - 10)
            self._progress.update(self._task, completed=step, line=progress_fields(step, self.total, stats,
                                                                                   self.eta(step), room))
            return
        now = time.perf_counter()
        if not stats or (now - self._last_line < self.every_s and step < self.total):
            return
        self._last_line = now
        parts = [f"{self.description} step {step:,}/{self.total:,}",
                 *(f"{k}={v:.4g}" for k, v in stats.items() if k != "ex/s"),
                 *([f"{stats['ex/s']:,.0f} ex/s"] if "ex/s" in stats else []),
                 f"elapsed {_clock(now - self.t0)}", f"eta {_clock(self.eta(step))}"]
        console.print(" ".join(parts), highlight=False, markup=False, soft_wrap=True)
