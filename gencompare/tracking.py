"""Experiment tracking: a W&B run (online or offline) or a no-op, behind one interface.

A tracking failure never stops training: every W&B call is guarded, and after the
first failure the tracker warns once and turns itself off (a failed artifact only warns).

What a W&B run of ``train`` holds: the ``train/*`` and ``eval/*`` history, the sample
grids, the console (stdout and stderr, ``output.log``), a summary without duplicate keys
(:func:`summary_of`) and three artifacts (:func:`log_run_artifacts`), offline too: the
checkpoint (type ``model``), ``metrics.json`` (type ``metrics``) and the config (type
``config``).
"""
from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gencompare.record import EVALUATION_KEYS, RunDir, WandbRun, flatten
from gencompare.terminal import console


class Tracker:
    """No-op tracker (``logger=none``); also the interface of :class:`WandbTracker`."""

    name = "none"
    run_path: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Stream scalars (keys like ``train/d_loss``) at training ``step``."""

    def log_image(self, key: str, path: str | Path, step: int | None = None, caption: str | None = None) -> None:
        """Log a PNG written to the run dir (sample grids, plots)."""

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Log a table (used by ``compare``)."""

    def summary(self, values: dict[str, Any]) -> None:
        """Set final values in the run summary (flat, slash-namespaced keys)."""

    def log_artifact(self, name: str, kind: str, files: Mapping[str, Path], *,
                     metadata: Mapping[str, Any] | None = None, aliases: Sequence[str] = ()) -> None:
        """Log ``files`` (name inside the artifact -> file) as artifact ``name`` of type ``kind``."""

    def reference(self) -> WandbRun | None:
        """Which W&B run this is (id, project, entity, path, mode, url, files dir); None without one."""
        return None

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; safe to call twice."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Finish the run exactly once whatever happened: exit code 0 on success, the
        ``SystemExit`` code after an interruption (130, 143), 1 after an error."""
        if exc_type is None:
            code = 0
        elif issubclass(exc_type, SystemExit):
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # an interruption carries its exit code (130, 143); anything else is a failure
            code = getattr(exc, "exit_code", 1)
        self.finish(exit_code=code)


def has_wandb_credentials() -> bool:
    """True when W&B could authenticate: ``WANDB_API_KEY`` or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> tuple[str, str | None]:
    """The W&B mode to use and, when chosen for the user, a one-line reason.

    ``WANDB_MODE`` in the environment wins over the config; ``auto`` is online with
    credentials and offline without (so no API key is ever required).
    """
    env = os.environ.get("WANDB_MODE")
    if env:
        return env, None
    if mode != "auto":
        return mode, None
    if has_wandb_credentials():
        return "online", None
    return "offline", "W&B: no API key found, logging offline (upload later with `wandb sync <run dir>/wandb/offline-run-*`)"


INIT_TIMEOUT_S = 10
"""How long ``wandb.init`` may wait for the server before the run falls back to offline mode."""


class WandbTracker(Tracker):
    """A W&B run whose files live in ``<run_dir>/wandb``."""

    name = "wandb"

    def __init__(self, *, run_dir: Path, config: dict, project: str, entity: str | None, mode: str,
                 name: str | None, group: str | None, tags: list[str], job_type: str = "train",
                 resume_id: str | None = None) -> None:
        import wandb

        self._wandb = wandb
        self._run = None
        self._run_dir = Path(run_dir)
        self._mode: str | None = None
        mode, notice = resolve_mode(mode)
        if notice:
            console.print(f"[yellow]{notice}[/]")
        try:
            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            console.print(f"[yellow]W&B: cannot create {run_dir / 'wandb'} ({exc.strerror or exc}); "
                          "training continues without tracking[/]")
            return
        init = dict(project=project, entity=entity, name=name, group=group, tags=tags, config=config,
                    dir=str(run_dir), job_type=job_type, reinit="finish_previous",
                    id=resume_id, resume="allow" if resume_id else None)
        try:
            self._start(init, mode)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            if mode != "online":
                self._fail(exc)
                return
            # the server did not answer within INIT_TIMEOUT_S: keep the run on disk instead
            console.print(f"[yellow]W&B: no answer from the server in {INIT_TIMEOUT_S} s ({type(exc).__name__}); "
                          "logging offline instead (upload later with `wandb sync <run dir>/wandb/offline-run-*`)[/]")
            try:
                self._start(init, "offline")
            except Exception as exc2:  # noqa: BLE001
                self._fail(exc2)

    def _start(self, init: dict, mode: str) -> None:
        # console="wrap": W&B patches sys.stdout/sys.stderr.write and keeps what passes in the
        # run's output.log; unlike "redirect" it leaves the file descriptors (and rich's live
        # progress line) alone
        self._run = self._wandb.init(
            **init, mode=mode,
            settings=self._wandb.Settings(console="wrap", silent=True, init_timeout=INIT_TIMEOUT_S),
        )
        self._mode = mode
        self.run_id = self._run.id
        self.run_path = str(Path(self._run.dir).parent) if mode == "offline" else self._run.url

    def _fail(self, exc: BaseException) -> None:
        console.print(f"[yellow]W&B failed ({type(exc).__name__}: {exc}); continuing without tracking[/]")
        self._run = None

    def _guard(self, fn, *args, **kwargs) -> None:
        if self._run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def log(self, metrics, step):
        self._guard(lambda: self._run.log(dict(metrics), step=step))

    def log_image(self, key, path, step=None, caption=None):
        def _log():
            payload = {key: self._wandb.Image(str(path), caption=caption)}
            self._run.log(payload, step=step) if step is not None else self._run.log(payload)
        self._guard(_log)

    def log_table(self, key, columns, rows):
        self._guard(lambda: self._run.log({key: self._wandb.Table(columns=columns, data=rows)}))

    def summary(self, values):
        def _set():
            for k, v in values.items():
                self._run.summary[k] = v
        self._guard(_set)

    def log_artifact(self, name, kind, files, *, metadata=None, aliases=()):
        if self._run is None:
            return
        try:
            artifact = self._wandb.Artifact(name, type=kind, metadata=dict(metadata or {}))
            for inside, path in files.items():
                artifact.add_file(str(path), name=inside)
            self._run.log_artifact(artifact, aliases=list(aliases) or None)
        except Exception as exc:  # noqa: BLE001 - the run itself is still worth finishing
            console.print(f"[yellow]W&B: artifact {name} not logged ({type(exc).__name__}: {exc})[/]")

    def reference(self):
        if self._run is None:
            return None
        run = self._run
        entity, project = run.entity or None, run.project or None
        files = Path(run.dir).parent  # <run dir>/wandb/<offline-run-...>: what `wandb sync` takes
        try:
            where = str(files.relative_to(self._run_dir))
        except ValueError:
            where = str(files)
        return WandbRun(id=run.id, project=project, entity=entity, mode=self._mode,
                        path="/".join(p for p in (entity, project, run.id) if p),
                        url=run.url if self._mode == "online" else None, dir=where)

    def finish(self, exit_code=0):
        if self._run is not None:
            run, self._run = self._run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001
                console.print(f"[yellow]W&B finish failed: {exc}[/]")


# metrics.json keys the summary leaves out: the last train/* values are final_losses already,
# the run is the W&B run itself, eval_history is in the eval/* history, and data.name and
# data.variant are `dataset` and `variant`
_NOT_SUMMARISED = ("final_losses", "wandb", "eval_history")
_NOT_SUMMARISED_DATA = ("name", "variant")


def summary_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics.json`` (:meth:`RunMetrics.to_dict`) as W&B summary values, one key per
    number: the evaluation under ``eval/`` (``eval/mode_coverage/reverse_kl``), the very
    keys whose history ``eval/*`` logs, so W&B's own last-value summary and this one
    coincide; the run's facts flat (``steps``, ``parameters/generator``)."""
    facts = {k: v for k, v in metrics.items() if k not in EVALUATION_KEYS and k not in _NOT_SUMMARISED}
    if isinstance(facts.get("data"), Mapping):
        facts["data"] = {k: v for k, v in facts["data"].items() if k not in _NOT_SUMMARISED_DATA}
    evaluation = {k: v for k, v in metrics.items() if k in EVALUATION_KEYS}
    return {**flatten(facts), **flatten(evaluation, "eval/")}


def log_run_artifacts(tracker: Tracker, run: RunDir, metrics: Mapping[str, Any], *, model: bool = True) -> None:
    """Log a finished run's records as artifacts of its W&B run: ``model-<run id>`` (type
    ``model``: ``checkpoints/last.ckpt``, aliases ``latest`` and ``step-<steps>``; only with
    ``model``), ``metrics-<run id>`` (``metrics.json``) and ``config-<run id>``
    (``config.yaml``, ``overrides.yaml``, ``.hydra/*``). Names inside an artifact are the
    files' paths in the run dir, so a download rebuilds its layout. Offline, W&B stages a
    copy of each file until ``wandb sync``. Nothing without a W&B run."""
    from gencompare.config import HYDRA_SUBDIR

    ref = tracker.reference()
    if ref is None:
        return
    meta = {k: metrics.get(k) for k in ("model", "family", "dataset", "variant", "seed", "steps")}
    if model and run.checkpoint.is_file():
        tracker.log_artifact(f"model-{ref.id}", "model", {RunDir.CHECKPOINT: run.checkpoint},
                             metadata={**meta, "parameters": metrics.get("parameters"),
                                       "read_with": "gencompare eval / sample, torch.load(weights_only=True)"},
                             aliases=["latest", f"step-{metrics.get('steps')}"])
    if run.metrics.is_file():
        tracker.log_artifact(f"metrics-{ref.id}", "metrics", {RunDir.METRICS: run.metrics}, metadata=meta)
    hydra = run.path / HYDRA_SUBDIR
    config = {RunDir.CONFIG: run.config, RunDir.OVERRIDES: run.overrides, RunDir.OVERRIDES_RESUME: run.overrides_resume,
              **{f"{HYDRA_SUBDIR}/{f.name}": f for f in sorted(hydra.glob("*.yaml"))}}
    config = {inside: f for inside, f in config.items() if f.is_file()}
    if config:
        tracker.log_artifact(f"config-{ref.id}", "config", config, metadata=meta)


def make_tracker(logger_cfg, *, run_dir: Path, config: dict, default_name: str, group: str | None,
                 tags: list[str], job_type: str = "train", resume_id: str | None = None) -> Tracker:
    """Build the tracker a ``logger`` config node asks for."""
    if logger_cfg.name == "none":
        return Tracker()
    if logger_cfg.name != "wandb":
        raise ValueError(f"unknown logger {logger_cfg.name!r}")
    return WandbTracker(
        run_dir=run_dir, config=config, project=logger_cfg.project, entity=logger_cfg.entity,
        mode=logger_cfg.mode, name=logger_cfg.run_name or default_name,
        group=logger_cfg.group or group, tags=sorted(set(tags) | set(logger_cfg.tags)),
        job_type=job_type, resume_id=resume_id,
    )
