"""``gencompare compare``: read the runs, build the tables and figures, write the files.

Writes, into the output folder: ``comparison.md`` (the tables, the training diagnostics,
the published numbers and the problems met), ``comparison.csv`` (a group per row),
``diagnostics.csv`` (a run per row), ``comparison.png``, ``samples_mosaic.png`` and, when runs
evaluated during training (``trainer.eval_every``), ``coverage_curves.png``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import shutil
import signal
import sys
from contextlib import contextmanager
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from gencompare.errors import GencompareError
from gencompare.record import RunDir
from gencompare.report.csv_files import comparison_rows, write_csv
from gencompare.report.diagnostics import diagnostics_table
from gencompare.report.figures import coverage_curves, plot_metrics, sample_mosaic
from gencompare.report.groups import Group, by_variant, group_runs
from gencompare.report.published import PUBLISHED
from gencompare.report.runs import Run, find_run_dirs, load_run, sweep_file
from gencompare.report.tables import TableData, pacgan_table, variant_table
from gencompare.report.wandb_log import log_comparison

try:
    from rich_argparse import RichHelpFormatter as _HelpFormatter
except ImportError:  # pragma: no cover - rich-argparse is a dependency, but help must not need it
    _HelpFormatter = argparse.HelpFormatter


@dataclass
class Comparison:
    """What ``compare`` produced (for callers and tests)."""

    groups: list[Group]
    tables: list[TableData]
    problems: list[str]
    files: dict[str, Path]
    diagnostics: list[dict[str, Any]]


def _sweep_command(paths: Sequence[Path]) -> str | None:
    """The ``gencompare train -m ...`` line of the first sweep dir among ``paths``."""
    for p in paths:
        f = sweep_file(p)
        if f is not None:
            try:
                # read, never resolved: a sent sweep dir's interpolations (${oc.env:...}) stay text
                task = OmegaConf.to_container(OmegaConf.load(f), resolve=False)["hydra"]["overrides"]["task"]
                return "gencompare train -m " + " ".join(shlex.quote(str(o)) for o in task)
            except Exception:  # noqa: BLE001 - informative only
                return None
    return None


def _load_runs(paths: Sequence[Path]) -> tuple[list[Run], list[str]]:
    run_dirs, problems = find_run_dirs(paths)
    runs: list[Run] = []
    for d in run_dirs:
        run, probs = load_run(d)
        problems += probs
        if run is not None:
            runs.append(run)
    return runs, problems


def _markdown(paths: Sequence[Path], runs: Sequence[Run], comparison: Comparison, extra_tables: Sequence[TableData],
              kinds: Sequence[str]) -> str:
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    md = ["# gencompare comparison", "",
          f"Generated {now} by `gencompare compare {' '.join(shlex.quote(str(p)) for p in paths)}` "
          f"from {len(runs)} run(s) in {len(comparison.groups)} group(s)."]
    sweep = _sweep_command(paths)
    if sweep:
        md.append(f"Sweep: `{sweep}`.")
    md.append("")
    md += [t.to_markdown() for t in (*comparison.tables, *extra_tables)]
    md.append("### Published numbers\n")
    md += [f"- {PUBLISHED[k]}" for k in kinds]
    md.append("")
    if comparison.problems:
        md.append("### Problems\n")
        md += [f"- {p}" for p in comparison.problems]
        md.append("")
    md.append("### Files\n")
    md += [f"- `{p.name}`" for p in comparison.files.values()]
    return "\n".join(md) + "\n"


def compare(paths: Sequence[Path | str], *, out: Path | str, wandb: bool = False, wandb_project: str = "gencompare",
            wandb_mode: str = "auto", console: Console | None = None, err_console: Console | None = None,
            searchpath: Sequence[str] = ()) -> Comparison:
    """Compare the runs under ``paths`` and write the report files into ``out``.

    Args:
        paths: run dirs, sweep (multirun) dirs or metrics.json files; searched recursively.
        out: folder for comparison.md / .csv / .png, samples_mosaic.png, diagnostics.csv.
        wandb: also log the tables (``wandb.Table``), figures, files and the W&B run paths
            of the compared runs to a W&B run of job type ``compare``.
        searchpath: config folders (as ``hydra.searchpath``) whose metrics' ``_target_``s may
            be imported for their table rows (:func:`gencompare.report.tables.declared_rows`);
            a run dir's config alone never makes compare import anything.
    Returns:
        The groups, tables, problems met and files written.
    Raises:
        GencompareError: no run could be compared (each problem was printed first).
    """
    console = console or Console()
    err = err_console or Console(stderr=True, soft_wrap=True, highlight=False)
    paths = [Path(p) for p in paths]
    runs, problems = _load_runs(paths)
    for p in problems:
        err.print(f"[yellow]warning:[/] {p}", markup=True)
    if not runs:
        raise GencompareError(
            f"nothing to compare: no readable {RunDir.METRICS} under {', '.join(map(str, paths))} "
            f"({len(problems)} problem(s) above)"
        )
    groups = group_runs(runs)
    variants = by_variant(groups)
    from gencompare.trust import search_path, trusted_targets

    trusted = trusted_targets(search_path(tuple(searchpath)))
    tables = [variant_table(variant, vg, trusted) for variant, vg in variants.items()]
    pac = pacgan_table(groups)
    diag, diag_records = diagnostics_table(groups)
    extra_tables = [x for x in (pac, diag) if x is not None]
    for t in tables + extra_tables:
        console.print(t.to_rich())

    out = Path(out)
    header, csv_rows = comparison_rows(groups)
    with staged(out) as tmp:  # every file written in a temp folder, then moved into out
        files = _write_files(tmp, groups, header, csv_rows, diag_records, err)
        result = Comparison(groups, tables, problems, files, diag_records)
        kinds = list(dict.fromkeys(vg[0].coverage for vg in variants.values()))
        text = _markdown(paths, runs, result, extra_tables, kinds)  # lists the files written so far
        files["markdown"] = tmp / "comparison.md"
        files["markdown"].write_text(text)
    files.update({kind: out / path.name for kind, path in files.items()})

    if wandb:
        log_comparison(out, paths, tables, pac, diag, header, csv_rows, files, wandb_project, wandb_mode, runs)
    err.print(f"wrote {', '.join(str(p) for p in files.values())}", markup=False)
    return result


STAGING = ".compare-tmp-"  # <out>/.compare-tmp-<pid>: compare's files until they are all written


@contextmanager
def staged(out: Path):
    """A temp folder inside ``out`` to write the report into; when the block ends without an
    error every file is moved into ``out`` (one ``os.replace`` each, SIGINT and SIGTERM held
    back meanwhile), else the folder is removed and ``out`` is as it was (a folder made for
    it removed too). Temp folders of a killed compare are swept on the next call."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(STAGING + "*"):
        pid = stale.name[len(STAGING):]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f"{STAGING}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not any(out.iterdir()):
            out.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_files(out: Path, groups, header: list[str], csv_rows: list[dict], diag_records: list[dict],
                 err: Console) -> dict[str, Path]:
    """comparison.csv, diagnostics.csv and the figures in ``out``, by kind; a figure with
    nothing to draw is not written (the mosaic's absence is warned about)."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"csv": write_csv(out / "comparison.csv", header, csv_rows)}
    if diag_records:
        keys = list(dict.fromkeys(k for d in diag_records for k in d))
        files["diagnostics"] = write_csv(out / "diagnostics.csv", keys, diag_records)
    drawn = {"figure": plot_metrics(groups, out / "comparison.png"),
             "coverage_curves": coverage_curves(groups, out / "coverage_curves.png"),
             "mosaic": sample_mosaic(groups, out / "samples_mosaic.png")}
    files.update({kind: path for kind, path in drawn.items() if path})
    if not drawn["mosaic"]:
        err.print(f"[yellow]warning:[/] no {RunDir.FINAL_GRID} in any run; no mosaic written", markup=True)
    return files


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gencompare compare", formatter_class=_HelpFormatter,
        description="Compare runs: one table per dataset variant (families as rows, seeds aggregated), "
                    "the PacGAN-style 2D table, GAN training diagnostics; writes comparison.md/.csv/.png "
                    "and samples_mosaic.png.")
    p.add_argument("paths", nargs="*", type=Path,
                   help=f"run dirs, sweep dirs (searched recursively for {RunDir.METRICS}) or {RunDir.METRICS} files; "
                        "default: the latest sweep under outputs/multirun")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the single dir given, else ./comparison)")
    p.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=False,
                   help="log the tables and figures to a W&B comparison run (default: off)")
    p.add_argument("--wandb-project", default="gencompare", help="W&B project (default: gencompare)")
    p.add_argument("--searchpath", action="append", default=[], metavar="DIR",
                   help="a config folder (as hydra.searchpath) whose metrics' _target_s may be imported for "
                        "their table rows; repeatable")
    p.add_argument("--wandb-mode", default="auto", choices=["auto", "online", "offline", "disabled"],
                   help="W&B mode; auto: online with an API key, else offline")
    return p


def latest_sweep() -> Path | None:
    """The newest ``<date>/<time>`` sweep dir under ``$GENCOMPARE_OUTPUT_DIR/multirun`` (default ``outputs``)."""
    root = Path(os.environ.get("GENCOMPARE_OUTPUT_DIR", "outputs")) / "multirun"
    sweeps = [t for d in root.glob("*") if d.is_dir() for t in d.glob("*") if t.is_dir()]
    return max(sweeps, key=lambda p: (p.parent.name, p.name)) if sweeps else None


def compare_main(argv: Sequence[str]) -> int:
    """``gencompare compare [paths ...] [--out DIR] [--wandb]`` (the CLI's ``compare``).

    Problems with single runs are printed as one ``warning:`` line each on stderr and
    the other runs are compared.

    Returns:
        0 when at least one run was compared.
    Raises:
        GencompareError: no path given and no sweep under outputs/multirun, or
            nothing could be compared (the CLI prints it and exits with status 2).
    """
    args = _parser().parse_args(list(argv))
    paths = list(args.paths)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if not paths:
        latest = latest_sweep()
        if latest is None:
            raise GencompareError("give run dirs or a sweep dir to compare (none under outputs/multirun)")
        err.print(f"comparing the latest sweep: {latest}", markup=False)
        paths = [latest]
    out = args.out or (paths[0] if len(paths) == 1 and paths[0].is_dir() else Path("comparison"))
    console = Console() if sys.stdout.isatty() else Console(width=240)
    try:
        compare(paths, out=out, wandb=args.wandb, wandb_project=args.wandb_project, wandb_mode=args.wandb_mode,
                console=console, err_console=err, searchpath=args.searchpath)
    except KeyboardInterrupt:  # the report is written in a temp folder: nothing of it reached out
        err.print(f"interrupted (SIGINT); no file of the comparison was written to {out}", markup=False)
        raise SystemExit(130) from None
    return 0

