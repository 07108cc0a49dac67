"""Evaluation: every metric that applies to the dataset, for any family, through ``sample(n)``.

Run at the end of ``gencompare train`` (the ``metrics`` config group), every
``trainer.eval_every`` steps (a lighter pass, logged over steps), and by
``gencompare eval run=<run dir>`` on a finished or interrupted run.

Metrics (docs/protocols.md):
- the family's own likelihood on the test split (section 2), named for what it is;
- the Parzen-window log-likelihood of Goodfellow et al. 2014 with its two sanity
  baselines (section 1), images only;
- mode coverage: 2D mixtures (3a), MNIST classes (3b), Stacked MNIST's 1,000 modes (3c);
- precision/recall, density/coverage and a Frechet distance on the tool's own
  classifier's features (3d), images only (the digit classifier, or for CIFAR-10 and
  labelled image folders :mod:`gencompare.metrics.image_classifier`);
- on 8-bit colour data (``bundle.bit_depth == 8``): Inception FID and IS (section 4),
  or, without Inception's weights, the same statistics on the tool's classifier under
  their own names (:mod:`gencompare.metrics.inception`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from gencompare.build import load_run_model
from gencompare.data import DataBundle
from gencompare.errors import GencompareError
from gencompare.images import as_pixels
from gencompare.metrics.image_classifier import classifier_for
from gencompare.metrics.inception import fid_and_is
from gencompare.metrics.features import density_coverage, frechet_distance, precision_recall
from gencompare.metrics.mode_coverage import class_coverage, mixture_coverage, stacked_coverage
from gencompare.metrics.parzen import parzen_evaluate, plot_sigma_selection, sanity_baselines
from gencompare.models.base import GenerativeModel
from gencompare.models.pixels import LOG_256, dequantization_note, dequantize
from gencompare.record import RecordError, RunDir, RunMetrics, atomic_write_json, flatten, read_metrics, write_metrics
from gencompare.terminal import console, table_console
from gencompare.tracking import Tracker, log_run_artifacts, make_tracker, summary_of


def draw_samples(model: GenerativeModel, n: int, batch_size: int, seed: int) -> tuple[torch.Tensor, float]:
    """``n`` samples on the CPU from a forked, seeded RNG, and the seconds the first
    1,000 took (the time-to-sample users compare)."""
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
            chunks.append(model.sample(b).detach().float().cpu())
            drawn += b
            if first_1000 is None and drawn >= min(n, 1000):
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                first_1000 = (time.perf_counter() - t0) * 1000 / drawn
    model.train(was_training)
    return torch.cat(chunks), float(first_1000 or 0.0)


def test_likelihood(model: GenerativeModel, bundle: DataBundle, mcfg) -> dict[str, Any]:
    """The family's own log-likelihood on the test split, in nats per example (NLL) and bits/dim.

    On 8-bit data (``bundle.bit_depth == 8``, not binarized) every family reports the NLL of
    the discrete 8-bit images, under the one convention of :mod:`gencompare.models.pixels`:
    a density (``model.discrete_likelihood`` False) is scored on uniformly dequantized
    pixels plus D ln 256; ``dequantization`` in the result says which applied.
    """
    kind = model.likelihood_kind
    if kind is None or not mcfg.likelihood.enabled:
        return {"kind": None, "note": f"{model.family} defines no likelihood" if kind is None else "disabled"}
    x = bundle.test
    if mcfg.likelihood.max_examples is not None:
        x = x[: int(mcfg.likelihood.max_examples)]
    was_training = model.training
    model.eval()
    values = []
    bs = int(mcfg.likelihood.batch_size)
    d = math.prod(bundle.shape)
    eight_bit = bundle.bit_depth == 8 and bundle.binarization == "none"
    dequantized = eight_bit and not model.discrete_likelihood
    with torch.no_grad():
        for i in range(0, len(x), bs):
            xb = dequantize(x[i : i + bs]) if dequantized else x[i : i + bs]
            ll = model.log_likelihood(xb).double().cpu()
            values.append(ll - d * LOG_256 if dequantized else ll)
    model.train(was_training)
    ll = torch.cat(values)
    nll = -ll
    what = model.describe_likelihood() or kind  # the family says what its likelihood is
    return {
        "kind": kind,
        "nll_nats": float(nll.mean()),
        "stderr": float(nll.std(unbiased=False) / math.sqrt(len(nll))),
        "bits_per_dim": float(nll.mean() / (d * math.log(2))),
        "num_examples": len(nll),
        "binarization": bundle.binarization,
        "note": f"{what} on {len(nll)} test examples of {bundle.variant}, binarization {bundle.binarization}"
        + (" (test set binarized once with a fixed seed)" if bundle.binarization in ("dynamic", "static") else "")
        + ("; bits/dim of the 8-bit pixels" if eight_bit else ""),
        **({"dequantization": dequantization_note(not dequantized)} if eight_bit else {}),
    }


def _baselines(cont: DataBundle, valid: torch.Tensor, test: torch.Tensor, pc, cache_dir: Path) -> dict[str, Any]:
    n = min(int(pc.num_centres), len(cont.train))
    key = f"parzen-baselines-v2-{cont.variant}-n{n}-v{len(valid)}-t{len(test)}-s{pc.sigmas}.json"
    path = cache_dir / key
    if path.is_file():
        return json.loads(path.read_text())
    if cont.streamed:
        return _streamed_baselines(cont, valid, test, pc, n, cache_dir / key.replace("-v2-", "-v2-streamed-"))
    train = as_pixels(cont.train)  # 8-bit data keeps its training split as uint8
    if len(train) > n:
        console.print(f"Parzen sanity baselines for {cont.variant} ({n} centres; k-means takes a while, cached after)")
        results = sanity_baselines(train, valid, test, n=n, sigmas=pc.sigmas, memory_budget_mb=pc.memory_budget_mb)
        out = {k: v.to_dict() for k, v in results.items()}
    else:
        # n k-means centroids of n images are the images themselves: the baseline would
        # repeat the train-images row, so it is omitted and the reason recorded
        g = torch.Generator().manual_seed(0)
        centres = train[torch.randperm(len(train), generator=g)[:n].to(train.device)]
        out = {
            "train_images": parzen_evaluate(centres, valid, test, pc.sigmas,
                                            memory_budget_mb=pc.memory_budget_mb).to_dict(),
            "note": f"k-means baseline omitted: {cont.variant} has {len(cont.train)} training images, "
                    f"not more than the {pc.num_centres} centres it needs",
        }
    atomic_write_json(out, path)
    return out


def _streamed_baselines(cont: DataBundle, valid: torch.Tensor, test: torch.Tensor, pc, n: int,
                        path: Path) -> dict[str, Any]:
    """The baselines of a training split streamed from its files: the training-image row
    from the same ``n`` images the resident path picks (seed 0), read alone; k-means
    centroids need the whole split at once and are omitted, the reason recorded."""
    if path.is_file():
        return json.loads(path.read_text())
    g = torch.Generator().manual_seed(0)
    centres = as_pixels(cont.train[torch.randperm(len(cont.train), generator=g)[:n]])  # (n, C, H, W)
    out = {
        "train_images": parzen_evaluate(centres.reshape(len(centres), -1), valid, test, pc.sigmas,
                                        memory_budget_mb=pc.memory_budget_mb).to_dict(),
        "note": f"k-means baseline omitted: {cont.variant}'s training split is streamed from its files "
                "(dataset.stream) and k-means reads the whole split at once",
    }
    atomic_write_json(out, path)
    return out


def check_metrics_config(mcfg: DictConfig, kind: str) -> None:
    """Reject a metrics config that cannot follow its protocol, before any work starts.

    Raises:
        GencompareError: fewer image samples than the Parzen protocol's centres.
    """
    if not mcfg.get("enabled", True) or kind != "image" or not mcfg.parzen.enabled:
        return
    if int(mcfg.num_samples) < int(mcfg.parzen.num_centres):
        raise GencompareError(
            f"metrics.num_samples={mcfg.num_samples} is below the {mcfg.parzen.num_centres} Parzen centres "
            "the protocol needs; raise metrics.num_samples or lower metrics.parzen.num_centres"
        )


def num_evaluation_samples(mcfg: DictConfig, kind: str, final: bool = True) -> int:
    """How many samples an evaluation of ``kind`` data ("image" or "points") scores."""
    n = int(mcfg.num_samples if kind == "image" else mcfg.num_samples_2d)
    return n if final else min(n, int(mcfg.intermediate_num_samples))


def evaluation_samples(mcfg: DictConfig, model: GenerativeModel, kind: str, seed: int,
                       final: bool = True) -> tuple[torch.Tensor, float]:
    """The samples :func:`evaluate_model` scores for run seed ``seed``, and the seconds the
    first 1,000 took: ``(N, *data shape)`` on the CPU, N = :func:`num_evaluation_samples`.
    Drawn from their own seed in a forked RNG, so drawing them before the evaluation (the
    runner's final 2D scatter plot shows them) leaves every metric as it was."""
    return draw_samples(model, num_evaluation_samples(mcfg, kind, final), int(mcfg.sample_batch_size), seed + 777)


def evaluate_model(mcfg: DictConfig, model: GenerativeModel, bundle: DataBundle, *, run_dir: Path,
                   cache_dir: Path, seed: int, final: bool = True,
                   drawn: tuple[torch.Tensor, float] | None = None) -> dict[str, Any]:
    """Every metric that applies to ``bundle`` for ``model``; a nested dict for metrics.json.

    ``final=False`` (intermediate evaluation) skips the likelihood, the baselines and
    plots, and uses ``mcfg.intermediate_num_samples``. ``drawn``: what
    :func:`evaluation_samples` returned for this model and seed, when the caller already
    drew them (they are not drawn twice).

    Raises:
        GencompareError: fewer samples than the Parzen protocol's centres.
    """
    out: dict[str, Any] = {}
    cont = bundle.continuous_view()
    image = bundle.kind == "image"
    n = num_evaluation_samples(mcfg, bundle.kind, final)
    pc = mcfg.parzen
    if final:
        check_metrics_config(mcfg, bundle.kind)
    samples, t1000 = drawn if drawn is not None else evaluation_samples(mcfg, model, bundle.kind, seed, final)
    if len(samples) != n:
        raise ValueError(f"evaluate_model was handed {len(samples)} samples for an evaluation of {n}")
    out["sample_time_1000_s"] = t1000
    out["num_samples"] = n
    sampler = model.describe_sampler()
    if sampler is not None:
        out["sampler"] = sampler
    if final:
        out["likelihood"] = test_likelihood(model, bundle, mcfg)
    device = model.device

    if image and pc.enabled and final:
        valid, selected_on = cont.valid, "valid"
        if len(valid) == 0:
            valid, selected_on = as_pixels(cont.train[: int(pc.num_valid)] if cont.streamed else cont.train), \
                "train (no validation split)"
        valid = valid[: int(pc.num_valid)].to(device)
        test = cont.test if pc.num_test is None else cont.test[: int(pc.num_test)]
        test = test.to(device)
        centres = samples[: int(pc.num_centres)].to(device)
        result = parzen_evaluate(centres, valid, test, pc.sigmas, memory_budget_mb=pc.memory_budget_mb)
        out["parzen"] = {**result.to_dict(), "selected_on": selected_on}
        plot_sigma_selection(result, RunDir(run_dir).parzen_plot)
        if pc.baselines:
            out["parzen_baselines"] = _baselines(cont, valid, test, pc, cache_dir)

    clf, info = None, {}
    if bundle.coverage == "mixture":
        out["mode_coverage"] = mixture_coverage(samples, bundle.means.cpu(), bundle.std)
    elif mcfg.classifier.enabled and bundle.coverage in ("classes", "stacked"):
        clf, info = classifier_for(cont, cache_dir, device=device, epochs=mcfg.classifier.epochs)
        out["classifier"] = {k: info[k] for k in ("test_accuracy", "meets_protocol", "feature_network",
                                                  "variant", "num_train", "required_accuracy") if k in info}
        fake = samples.to(device)
        if bundle.coverage == "stacked":
            out["mode_coverage"] = stacked_coverage(clf.predict_stacked(fake).cpu(), data_labels=cont.test_labels.cpu())
        else:
            out["mode_coverage"] = class_coverage(clf.predict(fake).cpu(), bundle.num_classes,
                                                  data_labels=cont.test_labels.cpu())
        if mcfg.features.enabled and bundle.coverage != "stacked":
            m = min(len(cont.test), int(mcfg.features.num_real), len(fake))
            real_f = clf.embed(cont.test[:m].to(device)).cpu()
            fake_f = clf.embed(fake[:m]).cpu()
            out["features"] = {
                **precision_recall(real_f, fake_f, k=3),
                **density_coverage(real_f, fake_f, k=5),
                "frechet_distance": frechet_distance(real_f, fake_f),
                "feature_network": info.get("feature_network"),
                "num_real": m, "num_fake": m,
            }
    if image and final and bundle.bit_depth == 8 and mcfg.get("fid_is") and mcfg.fid_is.enabled:
        out["fid_is"] = fid_and_is(cont.train, samples, fcfg=mcfg.fid_is, device=device, classifier=clf,
                                   classifier_name=info.get("feature_network"))
        if out["fid_is"].get("fid") is None:
            console.print(f"[bold yellow]warning:[/] {out['fid_is']['note']}")
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """A rich table of the evaluation results of one run."""
    table = Table(title=title, show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("protocol / note", overflow="fold")
    lk = metrics.get("likelihood") or {}
    if lk.get("kind"):
        table.add_row(f"NLL ({lk['kind']})", f"{lk['nll_nats']:.2f} ± {lk['stderr']:.2f} nats",
                      f"{lk['bits_per_dim']:.4f} bits/dim; {lk.get('note', '')}")
    elif lk:
        table.add_row("NLL", "none", lk.get("note", ""))
    pz = metrics.get("parzen")
    if pz:
        table.add_row("Parzen log-likelihood", f"{pz['mean']:.1f} ± {pz['stderr']:.1f} nats",
                      f"sigma={pz['sigma']:.3f} (on {pz.get('selected_on', 'valid')}), "
                      f"{pz['num_centres']} samples, {pz['num_test']} test images")
    labels = {"train_images": "train images", "kmeans_centroids": "k-means centroids"}
    for name, b in (metrics.get("parzen_baselines") or {}).items():
        if name == "note":
            table.add_row("  baseline: k-means centroids", "omitted", b)
            continue
        table.add_row(f"  baseline: {labels.get(name, name)}", f"{b['mean']:.1f} ± {b['stderr']:.1f} nats",
                      f"sigma={b['sigma']:.3f}, {b['num_centres']} centres; a model below this has not beaten the data")
    mc = metrics.get("mode_coverage") or {}
    if "modes_captured" in mc:
        table.add_row("modes captured", f"{mc['modes_captured']}/{mc['num_modes']}", "within 3 std of a mode (PacGAN)")
        table.add_row("high-quality samples", f"{100 * mc['high_quality_fraction']:.1f} %", "")
        table.add_row("reverse KL to uniform", _fmt(mc.get("reverse_kl")), "nats")
    if "classes_covered" in mc:
        table.add_row("classes covered", f"{mc['classes_covered']}/{mc['num_classes']}", "")
        table.add_row("KL(gen || data classes)", _fmt(mc.get("kl_to_data")), "nats")
        table.add_row("KL(gen || uniform)", _fmt(mc.get("kl_to_uniform")), "nats, max ln K")
    if "modes_covered" in mc:
        table.add_row("Stacked MNIST modes", f"{mc['modes_covered']}/{mc.get('num_modes', 1000)}", "")
        table.add_row("KL(gen || uniform)", _fmt(mc.get("kl_to_uniform")), "nats, max 6.91")
    ft = metrics.get("features") or {}
    for key in ("precision", "recall", "density", "coverage"):
        if key in ft:
            table.add_row(key, _fmt(ft[key]), f"k={3 if key in ('precision', 'recall') else 5}, features: {ft.get('feature_network')}")
    if "frechet_distance" in ft:
        table.add_row(f"FD ({ft.get('feature_network')})", _fmt(ft["frechet_distance"], 2), "Frechet distance, not FID")
    fi = metrics.get("fid_is") or {}
    if fi.get("fid") is not None:
        table.add_row("FID (Inception)", _fmt(fi["fid"], 2), f"{fi.get('feature_network')}; {fi.get('note', '')}")
        table.add_row("IS (Inception)", f"{fi['inception_score']:.2f} ± {fi['inception_score_std']:.2f}",
                      f"{fi.get('splits')} splits of {fi.get('num_fake')} samples")
    elif fi.get("fd") is not None:
        table.add_row(f"FD ({fi.get('feature_network')})", _fmt(fi["fd"], 2), fi.get("note", ""))
        table.add_row(f"IS-like score ({fi.get('feature_network')})",
                      f"{fi['classifier_score']:.2f} ± {fi['classifier_score_std']:.2f}", "not the Inception Score")
    elif fi:
        table.add_row("FID / IS", "none", fi.get("note", ""))
    clf = metrics.get("classifier") or {}
    if clf:
        ok = clf.get("meets_protocol")
        flag = "" if ok is None else (" (meets the 98% protocol)" if ok else " (BELOW the 98% protocol)")
        table.add_row("classifier test accuracy", f"{100 * clf['test_accuracy']:.2f} %", f"{clf.get('feature_network')}{flag}")
    if "sample_time_1000_s" in metrics:
        table.add_row("time to draw 1,000 samples", f"{metrics['sample_time_1000_s']:.2f} s", metrics.get("sampler", ""))
    return table


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
    table_console().print(metrics_table(results, f"{cfg.model.name} on {bundle.variant}, step {step}"))
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
    results = evaluate_model(cfg.metrics, model, bundle, run_dir=run.path, cache_dir=Path(cfg.paths.cache_dir),
                             seed=int(train_cfg.seed), final=True)
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
    table_console().print(metrics_table(metrics, f"{train_cfg.model.name} on {bundle.variant}, step {checkpoint['step']}"))
    return metrics
