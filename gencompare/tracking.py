"""Experiment tracking: a W&B run (online or offline) or a no-op, behind one interface.

A tracking failure never stops training: every W&B call is guarded, and after the
first failure the tracker warns once and turns itself off.
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
        self._run = self._wandb.init(
            **init, mode=mode,
            settings=self._wandb.Settings(console="off", silent=True, init_timeout=INIT_TIMEOUT_S),
        )
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

    def finish(self, exit_code=0):
        if self._run is not None:
            run, self._run = self._run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001
                console.print(f"[yellow]W&B finish failed: {exc}[/]")


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
