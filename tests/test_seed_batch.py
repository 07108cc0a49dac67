"""Seed batching (``trainer.seed_batch``, gencompare/train/seeds.py): S seeds trained stacked are S
ordinary runs: their own run dirs and records, the distribution of results of S separate
runs, a bit-identical resume, per-member clipping, and one line where a model cannot stack."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy import stats

from conftest import run_cli
from gencompare.checkpoint import load_checkpoint, seed_everything
from gencompare.build import build_model, prepare_data
from gencompare.errors import GencompareError
from gencompare.report.runs import find_run_dirs, load_run
from gencompare.train.train import train
from gencompare.train.seeds import build_members, member_dir, train_seed_batch
from gencompare.train.stacked import StackedSeeds, clip_members

pytestmark = pytest.mark.usefixtures("one_thread")


def test_member_dirs_are_the_separate_runs_names():
    assert member_dir(Path("r/12-00-00_gan_ring8_s0"), 0, 3) == Path("r/12-00-00_gan_ring8_s3")
    assert member_dir(Path("m/0_gan_ring8_s10"), 10, 12) == Path("m/0_gan_ring8_s12")
    assert member_dir(Path("m/model=gan,seed=0"), 0, 7) == Path("m/model=gan,seed=7")
    assert member_dir(Path("m/3_dataset-ring8__model-gan__seed-0"), 0, 9) == Path("m/3_dataset-ring8__model-gan__seed-9")
    assert member_dir(Path("m/seed=1_s10"), 1, 2) == Path("m/seed=2_s10")  # s10 is not seed 1's token
    assert member_dir(Path("custom"), 5, 6) == Path("custom_s6")
    assert member_dir(Path("custom"), 5, 5) == Path("custom")


def test_members_start_from_their_own_runs_weights_and_data(compose):
    """Each member is built as runner.train builds its separate run: the 2D mixtures are
    drawn from the run seed, so member i trains on (and is scored against) seed i's draw."""
    cfg = compose("model=gan", "dataset=ring8", "seed=3", "trainer.seed_batch=3")
    _, bundles, members = build_members(cfg)
    stack = StackedSeeds(members)
    for i, s in enumerate((3, 4, 5)):
        alone_cfg = compose("model=gan", "dataset=ring8", f"seed={s}")
        seed_everything(s)
        data = prepare_data(alone_cfg)
        model = build_model(alone_cfg, data)
        for split in ("train", "valid", "test"):
            assert torch.equal(getattr(bundles[i], split), getattr(data, split))
        state = stack.member_state(i)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(bundles[0].train, bundles[1].train)
    assert not torch.equal(stack.member_state(0)["generator.0.weight"], stack.member_state(1)["generator.0.weight"])


def test_clipping_is_per_member_as_clip_grad_norm():
    torch.manual_seed(0)
    scale = torch.tensor([0.01, 5.0, 50.0])  # member 0 under the max norm, the others over it
    grads = [torch.randn(3, 4, 5) * scale.view(3, 1, 1), torch.randn(3, 7) * scale.view(3, 1)]
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norms = clip_members(params, 3, max_norm=1.0, measure=True)
    for i in range(3):
        alone = [torch.zeros_like(g[i], requires_grad=True) for g in grads]
        for p, g in zip(alone, grads):
            p.grad = g[i].clone()
        expected = torch.nn.utils.clip_grad_norm_(alone, 1.0)
        torch.testing.assert_close(norms[i], expected)
        for p, a in zip(params, alone):
            torch.testing.assert_close(p.grad[i], a.grad)
    assert norms[0] < 1.0 < norms[1]  # member 0 was left as it was, the others scaled down
    assert clip_members(params, 3, max_norm=float("inf"), measure=False) is None


def test_each_member_writes_an_ordinary_run_dir(compose, tmp_path, capsys):
    out = tmp_path / "sweep" / "0_gan_ring8_s0"
    cfg = compose("model=gan", "dataset=ring8", "trainer.seed_batch=3", "trainer.max_steps=20",
                  "trainer.log_every=10", "metrics=fast", "metrics.num_samples_2d=500", run_dir=out)
    result = train_seed_batch(cfg)
    said = " ".join(capsys.readouterr().err.split())
    # a member's finish is not a resume the user asked for, and does not say so
    assert "resuming" not in said and said.count("trained in the seed batch (20 steps)") == 3
    dirs = [out.with_name(f"0_gan_ring8_s{s}") for s in range(3)]
    assert [r["run_dir"] for r in result["seed_batch"]] == [str(d) for d in dirs]
    losses = []
    for s, d in enumerate(dirs):
        m = json.loads((d / "metrics.json").read_text())
        assert m["seed"] == s and m["steps"] == 20
        assert {k: m["seed_batch"][k] for k in ("size", "seeds", "index")} == {"size": 3, "seeds": [0, 1, 2], "index": s}
        # a member's time is its share of the batch's: rates and times compare with separate runs'
        assert m["train_time_s"] == pytest.approx(m["seed_batch"]["batch_train_time_s"] / 3, rel=0.05)
        assert m["parameters_total"] == 34179  # one member's networks, not the stack's
        assert m["data"]["source"] == f"generated from seed {s}"  # its own draw of the mixture, as alone
        losses.append(m["final_losses"]["g_loss"])
        assert m["mode_coverage"]["num_modes"] == 8
        assert [json.loads(line)["step"] for line in (d / "history.jsonl").read_text().splitlines()] == [10, 20]
        assert (d / "samples" / "samples.png").stat().st_size > 0
        ckpt = load_checkpoint(d / "checkpoints" / "last.ckpt")
        assert ckpt["model"]["generator.0.weight"].shape == (128, 2)  # an ordinary checkpoint: eval/sample read it
        assert f"seed: {s}" in (d / "config.yaml").read_text()
    assert len(set(losses)) == 3  # three different runs, not one run three times
    found, problems = find_run_dirs([tmp_path / "sweep"])
    assert sorted(found) == dirs and not problems
    assert sorted(load_run(d)[0].seed for d in found) == [0, 1, 2]
    batch = load_checkpoint(out / "checkpoints" / "seed_batch.ckpt")
    assert batch["model"]["generator.0.weight"].shape == (3, 128, 2)


@pytest.mark.slow  # ~3 min: 20 runs of 1,500 steps; test_each_member_writes_an_ordinary_run_dir covers the code
def test_ten_members_match_ten_separate_runs_in_distribution(compose, tmp_path):
    """Mode coverage of 10 GAN seeds on ring8, batched and separately (same seeds, same
    batches, different noise draws): a two-sided Mann-Whitney U test per metric must not
    reject equality at the 1 % level. Deterministic on CPU: the same numbers every run."""
    common = ["model=gan", "dataset=ring8", "trainer.max_steps=1500", "trainer.batch_size=100",
              "trainer.log_every=500", "trainer.sample_every=100000", "trainer.checkpoint_every=100000",
              "metrics=fast"]
    alone = []
    for s in range(10):
        m = train(compose(*common, f"seed={s}", run_dir=tmp_path / "alone" / f"s{s}"))
        alone.append(m["mode_coverage"])
    train_seed_batch(compose(*common, "trainer.seed_batch=10", run_dir=tmp_path / "batch" / "run_s0"))
    batched = [json.loads((tmp_path / "batch" / f"run_s{s}" / "metrics.json").read_text())["mode_coverage"]
               for s in range(10)]
    for key in ("modes_captured", "high_quality_fraction"):
        a, b = [m[key] for m in alone], [m[key] for m in batched]
        assert len(set(b)) > 1, f"{key}: every batched member gave {b[0]}"
        p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        assert p > 0.01, f"{key}: separate {sorted(a)} vs batched {sorted(b)}, p = {p:.4f}"


def test_resume_continues_the_batch_bit_for_bit(compose, tmp_path):
    common = ["model=vae", "dataset=ring8", "trainer.seed_batch=2", "trainer.log_every=5", "trainer.checkpoint_every=100"]
    whole = tmp_path / "whole" / "run_s0"
    train_seed_batch(compose(*common, "trainer.max_steps=20", run_dir=whole))
    split = tmp_path / "split" / "run_s0"
    train_seed_batch(compose(*common, "trainer.max_steps=10", run_dir=split))
    train_seed_batch(compose(*common, "trainer.max_steps=20", "trainer.resume=true", run_dir=split))
    for s in range(2):
        a = load_checkpoint(whole.with_name(f"run_s{s}") / "checkpoints" / "last.ckpt")
        b = load_checkpoint(split.with_name(f"run_s{s}") / "checkpoints" / "last.ckpt")
        assert a["step"] == b["step"] == 20
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        for name, opt in a["optimizers"].items():
            for idx, state in opt["state"].items():
                assert all(torch.equal(v, b["optimizers"][name]["state"][idx][k]) for k, v in state.items())
        steps = [json.loads(x)["step"] for x in (split.with_name(f"run_s{s}") / "history.jsonl").read_text().splitlines()]
        assert steps == [5, 10, 15, 20]
        assert json.loads((split.with_name(f"run_s{s}") / "metrics.json").read_text())["steps"] == 20


def test_resume_needs_the_batch_checkpoint(compose, tmp_path):
    cfg = compose("model=gan", "dataset=ring8", "trainer.seed_batch=2", "trainer.resume=true", run_dir=tmp_path / "x")
    with pytest.raises(GencompareError, match="seed_batch.ckpt does not exist"):
        train_seed_batch(cfg)


@pytest.mark.parametrize("family", ["vae", "nade", "ddpm", "pacgan2d"])
def test_every_family_stacks(compose, tmp_path, family):
    fast = {"ddpm": ["model.module.timesteps=20"], "nade": ["model.module.hidden_dim=16"]}.get(family, [])
    out = tmp_path / "run_s0"
    train_seed_batch(compose(f"model={family}", "dataset=ring8", "trainer.seed_batch=2", "trainer.max_steps=4",
                             *fast, run_dir=out))
    states = [load_checkpoint(out.with_name(f"run_s{s}") / "checkpoints" / "last.ckpt")["model"] for s in range(2)]
    assert states[0].keys() == states[1].keys()
    moved = [k for k, v in states[0].items() if v.is_floating_point() and not torch.equal(v, states[1][k])]
    assert moved, "both members hold the same weights"
    if family == "pacgan2d":  # Blocks' batch normalisation keeps population statistics per member
        assert "generator.1.population_mean" in moved


def test_a_model_that_cannot_stack_trains_its_seeds_in_turn(compose, tmp_path, monkeypatch, capsys):
    """trainer.compile refuses today; a family's refusal takes the same path."""
    from gencompare.models.gan import GAN

    monkeypatch.setattr(GAN, "seed_batch_refusal", lambda self: "this GAN's reason", raising=False)
    out = tmp_path / "u_s0"
    result = train_seed_batch(compose("model=gan", "dataset=ring8", "trainer.seed_batch=2", run_dir=out))
    said = " ".join(capsys.readouterr().err.split())  # the console folds long lines
    assert "this GAN's reason" in said and "one after another" in said
    assert [r["seed"] for r in result["seed_batch"]] == [0, 1]
    for s in range(2):
        assert json.loads((tmp_path / f"u_s{s}" / "metrics.json").read_text())["seed"] == s


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_unrolled_gan_members_step_as_their_separate_runs(compose, monkeypatch, updates):
    """The unrolled GAN stacks: each member unrolls its own discriminator's Adam (its own
    moments, sliced by the vmap) and its generator's update is its separate run's. Same
    noise both ways (the GAN's noise fixed), three steps so that the moments are not zero."""
    import copy

    from gencompare.models.gan import GAN

    cfg = compose("model=gan", "dataset=ring8", "trainer.seed_batch=2", "model.module.unrolled_steps=2",
                  f"model.module.updates={updates}", "model.module.mlp2d_hidden=16", "model.module.latent_dim=4")
    _, bundles, members = build_members(cfg)
    alone = [copy.deepcopy(m) for m in members]
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(GAN, "_noise", lambda self, n: z[:n])
    batches = [torch.stack([b.train[32 * t: 32 * (t + 1)] for b in bundles]) for t in range(3)]  # (S, 32, 2)

    def steps(model, step_fn, batch_of):
        opts = model.configure_optimizers()
        for t in range(3):
            for name, opt in opts.items():
                opt.zero_grad()
                loss, _ = step_fn(batch_of(t), name)
                loss.sum().backward()
                opt.step()

    for i, model in enumerate(alone):
        steps(model, model.training_step, lambda t, i=i: batches[t][i])
    stack = StackedSeeds(members)
    steps(stack.model, stack.loss, lambda t: batches[t])
    for i, model in enumerate(alone):
        mine = stack.member_state(i)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(mine[k], v, rtol=1e-4, atol=1e-6, msg=lambda m, k=k, i=i: f"member {i} {k}: {m}")
    assert not torch.equal(stack.member_state(0)["generator.0.weight"], stack.member_state(1)["generator.0.weight"])


def test_seed_batch_below_one_is_one_line(tmp_path, data_dir):
    res = run_cli("train", "model=gan", "dataset=ring8", "trainer.seed_batch=0", "logger=none",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode != 0
    assert "trainer.seed_batch" in res.stderr and "Traceback" not in res.stderr


def test_cli_members_record_their_own_command(tmp_path, data_dir):
    res = run_cli("train", "model=vae", "dataset=ring8", "trainer.seed_batch=2", "trainer.max_steps=3",
                  "trainer.progress=false", "logger=none", "metrics=none", "seed=5", "hydra.run.dir=runs/v_s5",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    member = tmp_path / "runs" / "v_s6"
    overrides = (member / "overrides.yaml").read_text()
    assert "seed=6" in overrides and "seed_batch" not in overrides and "seed=5" not in overrides
    assert (member / ".hydra" / "config.yaml").is_file()
    assert json.loads((member / "metrics.json").read_text())["seed"] == 6


def test_a_nan_loss_of_one_member_stops_the_batch_naming_its_step():
    """Stacked losses are ``(S,)`` per optimizer: a NaN of one member is reported as one line
    with its step and value, as for one run (the check took ``float`` of the whole row before)."""
    from gencompare.train.loop import LogWindow

    window = LogWindow()
    window.add(1, [torch.tensor([0.5, 0.7]), torch.tensor([0.6, 0.8])], {})
    window.add(2, [torch.tensor([0.5, float("nan")]), torch.tensor([0.6, 0.8])], {})
    with pytest.raises(GencompareError, match=r"^loss became nan at step 2; lower the learning rate"):
        window.check_finite()
