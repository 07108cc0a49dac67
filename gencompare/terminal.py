"""The terminal: one stderr console for progress, warnings and one-line errors, and a
stdout console for result tables."""
from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def table_console() -> Console:
    """stdout console; wide enough off a terminal (logs, CI) that rows do not wrap."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def warn(message: str) -> None:
    """One yellow line on stderr."""
    console.print(f"[yellow]{message}[/]")
