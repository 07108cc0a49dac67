"""Evaluation: every metric that applies to the dataset, for any family, through ``sample(n)``.

Run at the end of ``gencompare train`` (the ``metrics`` config group), every
``trainer.eval_every`` steps (a lighter pass, logged over steps), and by
``gencompare eval run=<run dir>`` on a finished or interrupted run.

The metrics are the blocks of the ``metrics`` group that name a ``_target_``
(:mod:`gencompare.metrics.base`; the built-in ones in :mod:`gencompare.metrics.evaluators`
and :mod:`gencompare.metrics.likelihood`, docs/protocols.md), each scoring the same
samples, drawn once (:func:`evaluation_samples`). The terminal table is drawn from the
registry ``compare`` reads (:func:`gencompare.report.tables.run_table`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gencompare.build import load_run_model
from gencompare.checkpoint import seed_everything
from gencompare.data import DataBundle
from gencompare.errors import GencompareError
from gencompare.metrics.base import EvalContext, build_metrics
from gencompare.metrics.likelihood import test_likelihood  # noqa: F401 - its home before the metrics were objects
from gencompare.metrics.ranks import OneProcess
from gencompare.models.base import GenerativeModel
from gencompare.record import RecordError, RunDir, RunMetrics, flatten, read_metrics, write_metrics
from gencompare.report.tables import declared_rows, run_table
from gencompare.terminal import console, table_console
from gencompare.tracking import Tracker, log_run_artifacts, make_tracker, summary_of
from gencompare.train.distributed import evaluation_ranks


def draw_samples(model: GenerativeModel, n: int, batch_size: int, seed: int,
                 ranks: OneProcess | None = None) -> tuple[torch.Tensor, float]:
    """``n`` samples ``(n, *data shape)`` on the CPU from a forked, seeded RNG, drawn
    ``batch_size`` at a time, and the seconds the first 1,000 took (the time-to-sample
    users compare). On ``ranks`` of a data-parallel job each chunk is split over the ranks
    (:mod:`gencompare.metrics.ranks`): every rank draws the chunk's noise, runs the model
    on its rows and gets the gathered chunk, so the samples are one process's."""
    ranks = ranks or OneProcess()
    devices = [model.device] if model.device.type == "cuda" else []
    chunks: list[torch.Tensor] = []
    first_1000 = None
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        drawn = 0
        while drawn < n:
            b = min(batch_size, n - drawn)
            chunks.append(ranks.chunk(b, lambda _, count: model.sample(count).detach().float().cpu()))
            drawn += b
            if first_1000 is None and drawn >= min(n, 1000):
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                first_1000 = (time.perf_counter() - t0) * 1000 / drawn
    model.train(was_training)
    return torch.cat(chunks), float(first_1000 or 0.0)


def check_metrics_config(mcfg: DictConfig, kind: str) -> None:
    """Reject a metrics config that cannot follow its protocol, before any work starts:
    each metric's :meth:`~gencompare.metrics.base.Metric.check` for ``kind`` data.

    Raises:
        GencompareError: for example fewer image samples than the Parzen protocol's centres.
    """
    if not mcfg.get("enabled", True):
        return
    for metric in build_metrics(mcfg):
        metric.check(kind=kind, num_samples=num_evaluation_samples(mcfg, kind))


def num_evaluation_samples(mcfg: DictConfig, kind: str, final: bool = True) -> int:
    """How many samples an evaluation of ``kind`` data ("image" or "points") scores."""
    n = int(mcfg.num_samples if kind == "image" else mcfg.num_samples_2d)
    return n if final else min(n, int(mcfg.intermediate_num_samples))


def evaluation_samples(mcfg: DictConfig, model: GenerativeModel, kind: str, seed: int,
                       final: bool = True, ranks: OneProcess | None = None) -> tuple[torch.Tensor, float]:
    """The samples :func:`evaluate_model` scores for run seed ``seed``, and the seconds the
    first 1,000 took: ``(N, *data shape)`` on the CPU, N = :func:`num_evaluation_samples`.
    Drawn from their own seed in a forked RNG, so drawing them before the evaluation (the
    runner's final 2D scatter plot shows them) leaves every metric as it was. ``ranks``:
    see :func:`evaluate_model`."""
    ranks = ranks or evaluation_ranks(model.device)
    return draw_samples(model, num_evaluation_samples(mcfg, kind, final), int(mcfg.sample_batch_size), seed + 777,
                        ranks)


def evaluate_model(mcfg: DictConfig, model: GenerativeModel, bundle: DataBundle, *, run_dir: Path,
                   cache_dir: Path, seed: int, final: bool = True,
                   drawn: tuple[torch.Tensor, float] | None = None,
                   ranks: OneProcess | None = None) -> dict[str, Any]:
    """Every metric of ``mcfg`` (:func:`gencompare.metrics.base.build_metrics`, in its
    order) that applies to ``bundle`` for ``model``; a nested dict for metrics.json, one
    block per metric under its name, beside the number of samples and the time they took.

    ``final=False`` (intermediate evaluation) skips the metrics marked ``final_only`` (the
    likelihood, Parzen and its baselines, FID/IS) and uses ``mcfg.intermediate_num_samples``.
    ``drawn``: what :func:`evaluation_samples` returned for this model and seed, when the
    caller already drew them (they are not drawn twice). ``ranks``: the processes the
    evaluation runs on (default: this process's, :func:`gencompare.train.distributed.evaluation_ranks`;
    in a data-parallel job the samples and the likelihood are spread over the ranks, and
    rank 0 alone computes the other metrics, so only rank 0's result is whole).

    Raises:
        GencompareError: fewer samples than the Parzen protocol's centres.
    """
    n = num_evaluation_samples(mcfg, bundle.kind, final)
    if final:
        check_metrics_config(mcfg, bundle.kind)
    ranks = ranks or evaluation_ranks(model.device)
    samples, t1000 = drawn if drawn is not None else evaluation_samples(mcfg, model, bundle.kind, seed, final, ranks)
    if len(samples) != n:
        raise ValueError(f"evaluate_model was handed {len(samples)} samples for an evaluation of {n}")
    out: dict[str, Any] = {"sample_time_1000_s": t1000, "num_samples": n}
    sampler = model.describe_sampler()
    if sampler is not None:
        out["sampler"] = sampler
    ctx = EvalContext(model=model, bundle=bundle, cont=bundle.continuous_view(), samples=samples,
                      run_dir=Path(run_dir), cache_dir=Path(cache_dir), final=final, seed=int(seed), ranks=ranks)
    for metric in build_metrics(mcfg):
        if (metric.final_only and not final) or not ranks.computes(metric) or metric.applies(bundle, model) is not True:
            continue
        block = metric.compute(ctx) if metric.enabled else metric.when_disabled(ctx)
        if block is not None:
            out[metric.name] = block.to_dict() if hasattr(block, "to_dict") else block
    return out


def print_metrics_table(configs: list[DictConfig], metrics: dict[str, Any], title: str) -> None:
    """Print one run's evaluation on stdout: :func:`gencompare.report.tables.run_table`, the
    rows of the registry ``compare`` reads and those the metrics of ``configs`` (whole
    configs, each with a ``metrics`` group) declare, as ``compare`` finds them."""
    declared = declared_rows(OmegaConf.to_container(c) for c in configs)
    table = run_table(metrics, title, declared).to_rich()
    table.columns[-1].justify = "left"  # the notes are sentences
    table_console().print(table)


# ------------------------------------------------------------ during and after training
def evaluate_and_log(cfg: DictConfig, model: GenerativeModel, bundle: DataBundle, run: RunDir, tracker: Tracker,
                     step: int, *, final: bool, drawn: tuple[torch.Tensor, float] | None = None) -> dict[str, Any]:
    """Evaluate with ``cfg.metrics`` in a forked RNG (training's random stream is untouched,
    so evaluating never changes the trained weights) and log the scalars as ``eval/*``.
    ``drawn``: see :func:`evaluate_model`."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        results = evaluate_model(cfg.metrics, model, bundle, run_dir=run.path, cache_dir=Path(cfg.paths.cache_dir),
                                 seed=int(cfg.seed), final=final, drawn=drawn)
    scalars = {f"eval/{k}": v for k, v in flatten(results).items() if isinstance(v, (int, float))}
    tracker.log(scalars, step=step)
    if final and run.parzen_plot.is_file():
        tracker.log_image("eval/parzen_sigma", run.parzen_plot, step=step)
    return results


def metrics_enabled(cfg: DictConfig) -> bool:
    """Whether the run's ``metrics`` group asks for an evaluation."""
    return bool(cfg.get("metrics")) and bool(cfg.metrics.enabled)


def evaluate_after_training(cfg: DictConfig, model: GenerativeModel, bundle: DataBundle, run: RunDir,
                            tracker: Tracker, step: int,
                            drawn: tuple[torch.Tensor, float] | None = None) -> dict[str, Any]:
    """The final evaluation (``metrics`` group), printed as a table; ``{}`` when disabled.
    ``drawn``: see :func:`evaluate_model`."""
    if not metrics_enabled(cfg):
        return {}
    console.print("evaluating ...")
    results = evaluate_and_log(cfg, model, bundle, run, tracker, step, final=True, drawn=drawn)
    print_metrics_table([cfg], results, f"{cfg.model.name} on {bundle.variant}, step {step}")
    return results


# --------------------------------------------------------------------- eval command
def evaluate_run(cfg: DictConfig) -> dict[str, Any]:
    """``gencompare eval run=<run dir>``: rebuild the run's model and data from its config
    and checkpoint, compute every metric, merge them into its metrics.json and print them.

    Raises:
        GencompareError: no such run dir, no checkpoint, a checkpoint of another model, a
            metrics.json that does not match the schema.
    """
    run = RunDir(cfg.run)
    train_cfg, checkpoint, bundle, model = load_run_model(
        run.path, ckpt=cfg.get("ckpt"), trust=bool(cfg.get("trust_checkpoint", False)),
        data_dir=cfg.paths.data_dir, device=cfg.device.name,
        check=lambda run_cfg: check_metrics_config(cfg.metrics, run_cfg.dataset.get("kind", "image")))
    # the estimators that draw from the global RNG (IWAE, the DDPM bound) give the same numbers
    # at every eval of a run: seeded from the run's seed, after the model is rebuilt
    seed_everything(int(train_cfg.seed))
    ranks = evaluation_ranks(model.device)  # trainer.devices=N, torchrun: the processes share the work
    results = evaluate_model(cfg.metrics, model, bundle, run_dir=run.path, cache_dir=Path(cfg.paths.cache_dir),
                             seed=int(train_cfg.seed), final=True, ranks=ranks)
    if not ranks.main:
        return results  # rank 0 records the evaluation (the others' has only the metrics they share)
    if run.metrics.is_file():
        record = read_metrics(run.metrics)
    else:
        record = RunMetrics(model=train_cfg.model.name, dataset=bundle.name, variant=bundle.variant,
                            seed=int(train_cfg.seed), steps=int(checkpoint["step"]), status="evaluated-from-checkpoint")
    merged = {**record.to_dict(), **results, "evaluated_step": int(checkpoint["step"])}
    try:
        record = RunMetrics.from_dict(merged, str(run.metrics))
    except RecordError as exc:
        raise GencompareError(f"evaluation results do not fit the metrics.json schema: {exc}") from None
    write_metrics(record, run.metrics)
    metrics = record.to_dict()
    with make_tracker(cfg.logger, run_dir=run.path, config=OmegaConf.to_container(train_cfg),
                      default_name=f"eval-{train_cfg.model.name}-{bundle.variant}-s{train_cfg.seed}", group=None,
                      tags=[train_cfg.model.name, bundle.name, bundle.variant, "eval"], job_type="eval") as tracker:
        tracker.summary(summary_of(results))  # eval/* keys, as a training run's summary has them
        if run.parzen_plot.is_file():
            tracker.log_image("eval/parzen_sigma", run.parzen_plot)
        log_run_artifacts(tracker, run, metrics, model=False)  # the merged metrics.json; the checkpoint is unchanged
    print_metrics_table([cfg, train_cfg], metrics, f"{train_cfg.model.name} on {bundle.variant}, step {checkpoint['step']}")
    return metrics
