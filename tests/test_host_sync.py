"""The training loop reads no tensor on the host between log steps: every ``.item()``,
``float()``, ``bool()`` or ``.tolist()`` of a tensor is a CPU-GPU sync that stalls a GPU
each step. On the CPU the reads are counted by patching ``torch.Tensor``; on CUDA, torch's
own sync detector (``torch.cuda.set_sync_debug_mode("error")``) guards the non-log steps."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

from gencompare.errors import GencompareError
from gencompare.models.gan import GAN
from gencompare.train.loop import Loop
from gencompare.train.train import train

# torch.optim reads its per-parameter step counts, which it keeps as CPU tensors even when
# the parameters live on a GPU (not capturable): a host read that is no device sync
TORCH_OPTIM = str(Path(torch.optim.__file__).parent)
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
# log every 4th step, checkpoint every 6th: steps 1-3, 5, 7, 9, 10, 11 are plain steps
SCHEDULE = ["trainer.max_steps=12", "trainer.log_every=4", "trainer.checkpoint_every=6",
            "trainer.sample_every=1000", "trainer.batch_size=16"]
CASES = [
    ("gan", "ring8", []),
    # PacGAN's networks with every remedy: packing, minibatch discrimination, the unrolled
    # GAN (which reads the discriminator's Adam state), simultaneous and alternating updates
    ("gan", "ring8", ["model.module.arch=pacgan2d", "model.module.pacgan2d_hidden=16",
                      "model.module.pacgan2d_maxout_units=8", "model.module.pack=2", "model.module.updates=simultaneous",
                      "model.module.unrolled_steps=2", "model.module.minibatch_kernels=4"]),
    ("gan", "ring8", ["model.module.pack=2", "model.module.unrolled_steps=2", "model.module.minibatch_kernels=4"]),
    ("vae", "ring8", ["model.module.iwae_k=4"]),
    ("nade", "ring8", []),
    ("ddpm", "ring8", ["model.module.timesteps=20"]),
    ("vae", "mnist", ["model.module.iwae_k=4"]),  # dynamic binarization of each batch
    ("ddpm", "mnist", ["model.module.timesteps=20", "model.module.base_channels=8"]),
]

CASE_IDS = [f"{f}-{d}" + ("-pacgan2d-remedies" if "model.module.arch=pacgan2d" in o else
                           "-remedies" if "model.module.pack=2" in o else "") for f, d, o in CASES]


class HostReadCounter:
    """Counts host reads of tensors, by phase: inside a training step, or in the loop's
    duties after step ``n``."""

    def __init__(self) -> None:
        self.phase: tuple[str, int] = ("setup", 0)
        self.reads: list[tuple[str, int, str, str]] = []

    def patch(self, monkeypatch) -> None:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                caller = sys._getframe(1).f_code.co_filename
                if not caller.startswith(TORCH_OPTIM):  # Adam keeps its step count on the host on purpose
                    self.reads.append((*self.phase, _name, f"{Path(caller).name}:{sys._getframe(1).f_lineno}"))
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)
        step = Loop.training_step

        def training_step(loop):
            self.phase = ("step", loop.step + 1)
            step(loop)
            self.phase = ("duties", loop.step)

        monkeypatch.setattr(Loop, "training_step", training_step)


@pytest.mark.parametrize(("family", "dataset", "fast"), CASES, ids=CASE_IDS)
def test_no_host_read_between_log_steps(compose, monkeypatch, family, dataset, fast):
    cfg = compose(f"model={family}", f"dataset={dataset}", *fast, *SCHEDULE)
    counter = HostReadCounter()
    counter.patch(monkeypatch)
    train(cfg)
    # step 1 may check its first batch once (the DDPM's pixel range); later steps read nothing
    in_steps = [r for r in counter.reads if r[0] == "step" and r[1] > 1]
    assert in_steps == [], f"host reads inside training steps: {in_steps[:5]}"
    duty_steps = {4, 6, 8, 12}  # log (4, 8, 12) and checkpoint (6, 12) steps
    stray = [r for r in counter.reads if r[0] == "duties" and r[1] not in duty_steps]
    assert stray == [], f"host reads after plain steps: {stray[:5]}"
    # the counter does see the reads the log steps make
    assert any(r[0] == "duties" and r[1] == 4 for r in counter.reads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("family", "dataset", "fast"), CASES, ids=CASE_IDS)
def test_cuda_plain_steps_do_not_synchronize(compose, monkeypatch, family, dataset, fast):
    """torch raises on any synchronizing call while sync debug mode is "error"; it is
    switched on around every step that is neither a log nor a checkpoint step."""
    cfg = compose(f"model={family}", f"dataset={dataset}", *fast, *SCHEDULE, "device=cuda")
    step = Loop.training_step
    plain = {1, 2, 3, 5, 7, 9, 10, 11}

    def training_step(loop):
        guarded = loop.step + 1 in plain and loop.step > 0  # step 1 allocates (cudaMalloc syncs)
        with _sync_debug("error") if guarded else contextlib.nullcontext():
            step(loop)

    monkeypatch.setattr(Loop, "training_step", training_step)
    metrics = train(cfg)
    assert metrics["steps"] == 12 and metrics["device"].startswith("cuda")


@contextlib.contextmanager
def _sync_debug(mode: str):
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def test_a_diverged_loss_stops_at_the_next_log_step_naming_its_step(compose, monkeypatch):
    original = GAN.training_step

    def nan_from_step_6(self, batch, name):
        loss, logs = original(self, batch, name)
        if self._test_calls >= 5 * 2:  # two optimizers a step: the 6th step's first loss
            loss = loss * float("nan")
        self._test_calls += 1
        return loss, logs

    monkeypatch.setattr(GAN, "_test_calls", 0, raising=False)
    monkeypatch.setattr(GAN, "training_step", nan_from_step_6)
    cfg = compose("model=gan", "dataset=ring8", *SCHEDULE, "trainer.log_every=8", "trainer.checkpoint_every=100")
    with pytest.raises(GencompareError, match=r"loss became nan at step 6; lower the learning rate"):
        train(cfg)


def test_a_nan_discriminator_loss_stops_the_run_naming_its_step(compose, monkeypatch):
    """The check sees every optimizer's loss of a step, not only the last one's: a
    discriminator loss that is NaN at step 6 stops the run at the next log step, naming
    step 6. Its gradient stays finite, so the generator's loss of that step (the last
    optimizer's) stays finite too: a check of the last loss alone lets the run finish."""
    original = GAN.training_step
    d_steps = []

    def nan_discriminator_loss_at_step_6(self, batch, name):
        loss, logs = original(self, batch, name)
        if name == "discriminator":
            if len(d_steps) == 5:  # one discriminator step a step (k = 1): the 6th step's
                loss = loss + loss.detach() * float("nan")  # the value NaN, the gradient the loss's own
            d_steps.append(name)
        return loss, logs

    monkeypatch.setattr(GAN, "training_step", nan_discriminator_loss_at_step_6)
    cfg = compose("model=gan", "dataset=ring8", *SCHEDULE, "trainer.log_every=8", "trainer.checkpoint_every=100")
    with pytest.raises(GencompareError, match=r"loss became nan at step 6; lower the learning rate"):
        train(cfg)
