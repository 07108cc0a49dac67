"""What stacked seeds write while they train, member by member: the callbacks of
:mod:`gencompare.train.callbacks` for a :class:`~gencompare.train.stacked.StackedSeeds` loop.
Each member keeps the records its separate run would have (its ``history.jsonl``, its grids,
its evaluations); the checkpoint holds the whole batch (:mod:`gencompare.train.seeds`)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gencompare import config as _config
from gencompare.data import DataBundle
from gencompare.evaluate import evaluate_and_log
from gencompare.models.base import GenerativeModel
from gencompare.plots import save_samples
from gencompare.record import RunDir
from gencompare.tracking import Tracker
from gencompare.train.callbacks import CheckpointCallback, EvalCallback, GridCallback, LogCallback, append_history, \
    grid_samples
from gencompare.train.loop import Loop
from gencompare.train.stacked import StackedSeeds

__all__ = ["Members", "StackedCheckpoint", "StackedEval", "StackedGrid", "StackedLog", "member_optimizer_state"]


class Members:
    """The members of a stacked batch and their records.

    Args:
        stack: the stacked model.
        shells: ordinary models of the family, one per member, that receive a member's
            weights for its grid and evaluation.
        bundles, runs, seeds, cfgs: member i's data, run dir, seed and config at ``[i]``.
    """

    def __init__(self, stack: StackedSeeds, shells: list[GenerativeModel], bundles: list[DataBundle],
                 runs: list[RunDir], seeds: list[int], cfgs: list[DictConfig]) -> None:
        self.stack, self.shells, self.bundles, self.runs, self.seeds, self.cfgs = stack, shells, bundles, runs, seeds, cfgs
        self.logs: list[dict[str, float]] = [{} for _ in seeds]          # each member's last logged means
        self.evals: list[list[dict[str, Any]]] = [[] for _ in seeds]     # each member's eval_history

    def each(self):
        """``(i, seed, run, member cfg, ordinary model holding member i, its data)`` for every member."""
        for i, (seed, run, mcfg, shell) in enumerate(zip(self.seeds, self.runs, self.cfgs, self.shells)):
            yield i, seed, run, mcfg, self.stack.load_member(i, shell), self.bundles[i]


def member_optimizer_state(state: dict[str, Any], i: int, size: int) -> dict[str, Any]:
    """Member ``i``'s share of a stacked optimizer's ``state_dict``: every per-parameter
    tensor of the stacked shape ``(S, ...)`` sliced, the rest (Adam's step count) copied."""
    def pick(v: Any) -> Any:
        return v[i].clone() if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == size else copy.deepcopy(v)

    return {"state": {idx: {k: pick(v) for k, v in s.items()} for idx, s in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


class StackedLog(LogCallback):
    """Each member's ``train/*`` means into its own ``history.jsonl`` (no W&B run during the
    batch: each member's gets the curves replayed at its finish); the progress line shows
    the means over members and the examples per second of all."""

    def __init__(self, members: Members, histories: list, batch_size: int) -> None:
        super().__init__(members.runs[0], histories[0], Tracker(), batch_size)
        self.members, self.histories = members, histories

    def log(self, loop: Loop) -> None:
        loop.window.check_finite()
        size = self.members.stack.size
        values = {k: torch.stack([v.float() for v in vs]).mean(dim=0).tolist() for k, vs in loop.window.values.items()}
        loop.window.values.clear()  # one host read for every member's means
        self.members.logs = [{k: v[i] for k, v in values.items()} for i in range(size)]
        loop.last_logs = {k: sum(v) / size for k, v in values.items()}  # the progress line shows the mean
        rate = self.rate(loop)
        for run, history, logs in zip(self.members.runs, self.histories, self.members.logs):
            record = {**{f"train/{k}": v for k, v in logs.items()}, "train/samples_per_s": rate,
                      "train/epoch": loop.stream.epoch}
            append_history(history, run, loop.step, record)
        shown = [k for k in loop.last_logs if not k.startswith("grad_norm")][:4]
        loop.stats = {**{k: loop.last_logs[k] for k in shown}, "ex/s": rate * size}


class StackedGrid(GridCallback):
    """Each member's grid in its own run dir, from its own seed's fixed noise."""

    def __init__(self, cfg: DictConfig, members: Members) -> None:
        super().__init__(cfg, members.bundles[0], members.runs[0], Tracker())
        self.members = members

    def write(self, loop: Loop, tag: str, samples: torch.Tensor | None = None) -> Path | None:
        path = None
        for _, seed, run, _, model, data in self.members.each():
            real = data.train[:5000] if data.kind == "points" else None
            title = f"{self.cfg.model.name} on {data.variant}, step {loop.step}"
            path = save_samples(grid_samples(model, self.n, seed + 12345), run.grid(tag), means=data.means,
                                std=data.std, real=real, seed=seed, title=title, color=model.family_color)
        return path


class StackedEval(EvalCallback):
    """Each member evaluated with its own config and data, kept in its own eval_history."""

    def __init__(self, cfg: DictConfig, members: Members) -> None:
        super().__init__(cfg, members.bundles[0], members.runs[0], Tracker())
        self.members = members

    def evaluate(self, loop: Loop) -> None:
        for i, _, run, mcfg, model, data in self.members.each():
            results = evaluate_and_log(mcfg, model, data, run, Tracker(), loop.step, final=False)
            self.members.evals[i].append({"step": loop.step, **results})


class StackedCheckpoint(CheckpointCallback):
    """The stacked model's :class:`~gencompare.train.state.TrainState`, with the members'
    records (``seed_batch``), in ``path`` (``checkpoints/seed_batch.ckpt`` of member 0's dir)."""

    def __init__(self, cfg: DictConfig, members: Members, path: Path) -> None:
        bundle, model = members.bundles[0], members.stack.model
        super().__init__(members.runs[0], Tracker(), int(cfg.trainer.checkpoint_every), family=cfg.model.name,
                         variant=bundle.variant, config=_config.to_container(cfg), data_shape=list(bundle.shape),
                         arch=getattr(model, "arch", None))
        self.members, self.path = members, path

    def save(self, loop: Loop) -> None:
        loop.window.check_finite()
        state = self.state(loop)
        m = self.members
        state.seed_batch = {"size": m.stack.size, "seeds": m.seeds, "dirs": [str(r.path) for r in m.runs],
                            "member_logs": m.logs, "member_evals": m.evals}
        state.save(self.path)
