"""The head and the writing of a ``benchmarks/results/*.md`` file, shared by the benchmarks:
when, by which command, on what (torch, threads, device, CPUs, load)."""
from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

import torch


def head(title: str, device: str, load_start: float | None = None) -> list[str]:
    """The title and the lines every results file starts with, for ``device`` ("cpu", "cuda:0")."""
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else (platform.processor() or platform.machine())
    load = f"load average at start {load_start:.2f}, " if load_start is not None else "load average "
    return [
        f"# {title}", "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- torch {torch.__version__}, {torch.get_num_threads()} CPU threads; device {device} ({where}); "
        f"{os.cpu_count()} logical CPUs; {load}at end {os.getloadavg()[0]:.2f}",
    ]


def write(lines: list[str], out: Path) -> Path:
    """Print the file's text and write it to ``out`` (its folder made if needed)."""
    text = "\n".join(lines) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return out
