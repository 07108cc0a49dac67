"""Shared fixtures: compose the real config, shrink it, run it on the CPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One OpenMP thread for every process a test starts (CLI runs, sweep jobs, ranks), unless the
# caller set its own: the suite runs several such processes side by side on CI's 2 cores, where
# two threads each make OpenMP's spinning threads fight (two 1,500-step runs started together
# took 346 s at 2 threads each against 17 s at one). Tests in this process still run at the
# thread count `_torch_threads` sets.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal  # noqa: E402

import torch  # noqa: E402 - after OMP_NUM_THREADS, which torch reads when it loads

# A suite started in the background by a non-interactive shell (`cmd &`, nohup, some CI
# runners) inherits SIGINT ignored, and so would every process it starts: the Ctrl-C tests
# would then see runs that ignore the signal and test nothing. Give this process, and so its
# children, the SIGINT a terminal gives a command.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(ROOT / "conf")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# small, fast defaults for every end-to-end test: no W&B, no progress bar, few steps
SHRINK = [
    "logger=none",
    "trainer.progress=false",
    "trainer.max_steps=3",
    "trainer.batch_size=16",
    "trainer.log_every=1",
    "trainer.num_grid_samples=4",
    "dataset.download=false",
    "metrics=none",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder per test session (Fashion-MNIST is decompressed into it once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True, scope="session")
def _wandb_files_in_tmp(tmp_path_factory):
    """W&B's own folders in the session's tmp dir: an offline run stages a copy of each
    artifact file (checkpoints too) in WANDB_DATA_DIR until `wandb sync`, which for a test
    run never comes; subprocesses (run_cli) inherit the setting."""
    root = tmp_path_factory.mktemp("wandb")
    mp = pytest.MonkeyPatch()
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config")):
        mp.setenv(var, str(root / sub))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_thread():
    """One torch thread for a test: the model tests loop over small ops, where intra-op
    threads only add synchronisation, which on a shared 2-core CPU costs more than the
    work. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; it runs after
    ``_torch_threads`` and restores its setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def compose_train(run_dir: Path, data_dir: Path, *overrides: str):
    """The real ``conf/train.yaml`` composed with ``overrides`` (applied after SHRINK)."""
    from hydra import compose, initialize_config_dir

    import gencompare.config  # noqa: F401 - registers the schema

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*SHRINK, f"paths.output_dir={run_dir}", f"paths.data_dir={data_dir}",
                       f"paths.cache_dir={data_dir / 'cache'}", *overrides],
        )
    return cfg


@pytest.fixture
def compose(tmp_path, data_dir):
    def _compose(*overrides: str, run_dir: Path | None = None):
        return compose_train(run_dir or tmp_path / "run", data_dir, *overrides)

    return _compose


def run_cli(*args: str, cwd: Path, data_dir: Path, env: dict | None = None, timeout: int = 600,
            wait: bool = True):
    """Run ``gencompare <args>`` as a user would, in ``cwd``."""
    full_env = {**os.environ, "GENCOMPARE_DATA_DIR": str(data_dir),
                "GENCOMPARE_CACHE_DIR": str(data_dir / "cache"), "WANDB_MODE": "offline",
                "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    full_env.pop("HYDRA_FULL_ERROR", None)
    # a test that ran W&B in this process left WANDB_SERVICE naming its wandb-core service: a
    # CLI run that inherits it logs through that service, whose transaction log of the run
    # may not be on disk when the test reads it (seen in the full suite); a user's command
    # starts its own service
    full_env.pop("WANDB_SERVICE", None)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "gencompare.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install -y dataset-fashion-mnist for the offline Fashion-MNIST",
)
