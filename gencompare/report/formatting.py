"""Numbers as table cells: significant digits, counts, durations, ``mean ± spread``."""
from __future__ import annotations

import math
import textwrap
from collections.abc import Callable

from gencompare.report.stats import Stat

DASH = "—"  # a cell with no value


def fmt(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros dropped; thousands separated above 10^digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 10 ** digits:
        return f"{x:,.0f}"
    decimals = min(4, max(0, digits - 1 - int(math.floor(math.log10(mag)))))
    text = f"{x:.{decimals}f}"
    # 8.00 modes reads as 8; 6.30 as PacGAN's 6.3
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_count(x: float) -> str:
    """A parameter count: ``34.18k``, ``1.20M``."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f}{unit}"
    return f"{x:.0f}"


def fmt_seconds(x: float | None) -> str:
    """A duration in s, min or h."""
    if x is None or math.isnan(x):
        return DASH
    if x >= 3600:
        return f"{x / 3600:.2f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{fmt(x)} s"


def pm(stat: Stat | None, own_stderr: Stat | None = None, spread: str = "std",
       fmt: Callable[[float], str] = fmt, n_total: int | None = None) -> str:
    """``mean ± spread`` (``spread``: ``std`` or ``stderr`` over seeds); for a single run,
    ``± own_stderr`` (the metric's standard error over test examples) when given;
    ``(n=k)`` when only k of the group's ``n_total`` runs report it."""
    if stat is None:
        return DASH
    s = fmt(stat.mean)
    err = stat.std if spread == "std" else stat.stderr
    if stat.n >= 2 and not math.isnan(err):
        s += f" ± {fmt(err)}"
    elif stat.n == 1 and own_stderr is not None and not math.isnan(own_stderr.mean):
        s += f" ± {fmt(own_stderr.mean)}"
    if n_total is not None and stat.n != n_total:
        s += f" (n={stat.n})"
    return s


def wrap(label: str, width: int = 28) -> str:
    """A long group label on several lines (figure tick labels)."""
    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) or label
