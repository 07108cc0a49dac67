"""Training diagnostics: how unstable each run's training was (loss oscillation, the
discriminator's lead, gradient norms) and whether its mode coverage fell from a peak."""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from gencompare.record import RunDir, finite_or_none
from gencompare.report.formatting import DASH, fmt
from gencompare.report.groups import Group
from gencompare.report.runs import Run
from gencompare.report.stats import summarize
from gencompare.report.tables import TableData

DIAGNOSTIC_TAIL = 0.2  # share of the logged steps, at the end of training, that the oscillation is measured on
_COVERAGE_COUNTS = ("modes_captured", "classes_covered", "modes_covered")  # one per mode-coverage shape


def _coverage_key(mode_coverage: Mapping[str, Any]) -> str | None:
    return next((k for k in _COVERAGE_COUNTS if k in mode_coverage), None)


def _history_summary(hist: list[dict[str, Any]], tail: float) -> dict[str, Any]:
    k = max(2, math.ceil(tail * len(hist)))
    last = hist[-k:]
    out: dict[str, Any] = {"tail_steps": f"{int(last[0]['step'])}-{int(last[-1]['step'])}", "tail_records": len(last)}

    def series(key: str) -> list[float]:
        return [float(r[key]) for r in last if finite_or_none(r.get(key)) is not None]

    for name in ("d_loss", "g_loss"):
        s = summarize(series(f"train/{name}"))
        if s is not None:
            out[f"{name}_mean"], out[f"{name}_std"] = s.mean, s.std
    gaps = [float(r["train/d_real"]) - float(r["train/d_fake"]) for r in last
            if finite_or_none(r.get("train/d_real")) is not None and finite_or_none(r.get("train/d_fake")) is not None]
    if gaps:
        out["d_gap_mean"] = statistics.fmean(gaps)
    g = summarize(series("train/grad_norm/generator"))
    if g is not None:
        out["grad_norm_generator_mean"] = g.mean
        out["grad_norm_generator_max"] = max(series("train/grad_norm/generator"))
    if "d_loss_mean" not in out:
        for key in ("train/loss", "train/nll", "train/elbo"):
            s = summarize(series(key))
            if s is not None:
                out["loss_key"], out["loss_mean"], out["loss_std"] = key.split("/", 1)[1], s.mean, s.std
                break
    return out


def coverage_over_training(metrics: Mapping[str, Any]) -> tuple[str | None, list[tuple[float, float, float | None]]]:
    """Mode coverage at each ``trainer.eval_every`` evaluation and at the end of training.

    Returns:
        The count's key (``modes_captured``, ``classes_covered`` or ``modes_covered``)
        and ``(step, count, high-quality fraction or None)`` in step order; ``(None, [])``
        without coverage.
    """
    evaluations = [e for e in (metrics.get("eval_history") or []) if isinstance(e, Mapping)]
    evaluations.append({"step": metrics.get("steps", math.nan), "mode_coverage": metrics.get("mode_coverage")})
    points: list[tuple[float, float, float | None]] = []
    ckey = None
    for e in evaluations:
        mc = e.get("mode_coverage")
        if isinstance(mc, Mapping) and (ckey := ckey or _coverage_key(mc)) and finite_or_none(mc.get(ckey)) is not None:
            hq = finite_or_none(mc.get("high_quality_fraction"))
            points.append((float(e.get("step", math.nan)), float(mc[ckey]), None if hq is None else float(hq)))
    return (ckey, points) if points else (None, [])


def _coverage_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    ckey, history = coverage_over_training(metrics)
    points = [(step, count) for step, count, _ in history]
    if not (points and ckey):
        return {}
    peak_step, peak = max(points, key=lambda p: (p[1], -p[0]))
    return dict(coverage_key=ckey, coverage_peak=peak, coverage_peak_step=peak_step, coverage_final=points[-1][1],
                coverage_fell=points[-1][1] < peak, coverage_evaluations=len(points))


def training_diagnostics(run: Run, tail: float = DIAGNOSTIC_TAIL) -> dict[str, Any] | None:
    """A per-run instability summary (issue 5, item 3).

    From ``history.jsonl`` (``step`` and the ``train/*`` scalars of each logged step),
    over the last ``tail`` share of the logged steps: mean and std of
    ``train/d_loss`` and ``train/g_loss`` (GAN) or of the family's loss
    (``train/loss``, ``train/nll`` or ``train/elbo``), the mean gap
    ``train/d_real - train/d_fake`` (D(x) - D(G(z)); near 1 the discriminator wins and
    the generator's gradient vanishes, Goodfellow et al. 2014 Sec. 3), and the mean
    ``train/grad_norm/generator``. From ``eval_history`` in metrics.json and the final
    ``mode_coverage``: the peak coverage over training, its step, the final value, and
    whether coverage fell from its peak (mode collapse during training).

    Returns:
        None when the run has neither a history nor intermediate evaluations.
    """
    out = _history_summary(run.history, tail) if run.history else {}
    out.update(_coverage_summary(run.metrics))
    return out or None


def diagnostics_table(groups: Sequence[Group]) -> tuple[TableData | None, list[dict[str, Any]]]:
    """The diagnostics of every run as a table and as records (one per run, for
    diagnostics.csv); ``(None, [])`` when no run has any."""
    ranked = []  # (the family's rank, the run's record): the table's order
    for g in groups:
        for r in g.runs:
            d = training_diagnostics(r)
            if d is not None:
                ranked.append((g.family_rank, {"run": str(r.path), "label": g.label, "model": g.model,
                                               "variant": g.variant, "seed": r.seed, **d}))
    records = [d for _, d in ranked]
    if not records:
        return None, []

    def ms(d, stem):
        if f"{stem}_mean" not in d:
            return DASH
        return f"{fmt(d[f'{stem}_mean'])} ± {fmt(d[f'{stem}_std'])}"

    columns = ["run", "seed", "last 20 % of steps", "d_loss", "g_loss", "D(x) − D(G(z))", "‖∇G‖ mean / max",
               "loss", "coverage peak (step) → final", "coverage fell"]
    rows = []
    ranked.sort(key=lambda rd: (rd[0], rd[1]["variant"], rd[1]["label"], str(rd[1]["seed"])))
    for _, d in ranked:
        cov = DASH
        if "coverage_peak" in d:
            cov = f"{fmt(d['coverage_peak'])} ({d['coverage_peak_step']:.0f}) → {fmt(d['coverage_final'])}"
        gn = (f"{fmt(d['grad_norm_generator_mean'])} / {fmt(d['grad_norm_generator_max'])}"
              if "grad_norm_generator_mean" in d else DASH)
        loss = f"{d['loss_key']} {ms(d, 'loss')}" if "loss_key" in d else DASH
        rows.append([f"{d['label']} on {d['variant']}", str(d["seed"]), d.get("tail_steps", DASH), ms(d, "d_loss"),
                     ms(d, "g_loss"), fmt(d.get("d_gap_mean")), gn, loss, cov,
                     ("yes" if d["coverage_fell"] else "no") if "coverage_fell" in d else DASH])
    caption = (f"Losses: mean ± std over the last 20 % of logged steps ({RunDir.HISTORY}); a large std is an "
               "oscillating game. D(x) − D(G(z)) near 1: the discriminator wins and the generator's gradient "
               "vanishes. Coverage: modes / classes over trainer.eval_every evaluations and the final one.")
    return TableData("Training diagnostics", columns, rows, caption).without_empty_columns(keep=2), records
