"""The wheel is what a user installs: build it, install it into a fresh virtual environment
and run the CLI from an empty folder, as someone who never saw this repository would.

The fresh environment reuses the dependencies already installed here (a ``.pth`` line
pointing at this interpreter's site-packages; ``.pth`` files inside that folder are not
processed, so the editable install's finder stays out) and downloads nothing.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# top-level folders a build must not see: environments, run outputs, data, build leftovers
NOT_SOURCES = {".git", ".venv", "venv", "build", "dist", "outputs", "multirun", "wandb", "data", ".cache", ".whl",
               ".pytest_cache"}


def not_sources(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info")) or (top and n in NOT_SOURCES)}


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment: nothing that points Python or gencompare at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "HYDRA_FULL_ERROR")
           and not k.startswith("GENCOMPARE_")}
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}, **extra)
    return env


def run(cmd: list, cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def isolation_args() -> list[str]:
    """``--no-build-isolation`` (offline, seconds) where this environment has what
    pyproject's [build-system] requires (the test extra installs it); else pip fetches it."""
    try:
        import tomllib

        from packaging.requirements import Requirement
    except ImportError:
        return []
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return []
        if not requirement.specifier.contains(installed, prereleases=True):
            return []
    return ["--no-build-isolation"]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, str]:
    """The wheel and the build's output. Built from a copy of the sources: an in-tree build
    leaves build/lib behind, and modules deleted since would ship in the next wheel from there."""
    src = tmp_path_factory.mktemp("src") / "gencompare-src"
    shutil.copytree(ROOT, src, ignore=not_sources)
    out = tmp_path_factory.mktemp("wheel")
    offline = isolation_args()
    proc = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", *offline, *(["--no-index"] if offline else []),
                "-w", out, src], cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("gencompare-*.whl")
    return wheel, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def venv(build, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (not editable)."""
    wheel, _ = build
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    proc = run([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=env_dir.parent)
    assert proc.returncode == 0, proc.stderr
    python = env_dir / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env_dir)
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib.stdout.strip()) / "_gencompare_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    proc = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
               cwd=env_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env_dir


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """An empty folder to start gencompare from, far from the checkout."""
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_wheel_ships_every_module_and_config(build):
    """Every module of gencompare/ and every config of conf/ (as gencompare/conf/), and no
    setuptools deprecation or packaging warning while building it."""
    wheel, log = build
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gencompare").rglob("*.py")
               if "__pycache__" not in p.parts}
    configs = {"gencompare/conf/" + p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    assert "gencompare/conf/train.yaml" in configs and "gencompare/conf/model/vae.yaml" in configs
    assert modules - names == set(), "modules missing from the wheel (a subpackage without __init__.py?)"
    assert configs - names == set(), "configs missing from the wheel ([tool.setuptools.package-data])"
    assert "gencompare/conf/__init__.py" in names  # Hydra reads pkg:// sources only from a package
    assert not [n for n in names if n.startswith("conf/")], "conf/ must ship inside the package, not top level"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    for warning in ("SetuptoolsDeprecationWarning", "BuildBackendWarning", "is deprecated",
                    "absent from the `packages` configuration"):
        assert warning not in log, f"building the wheel warns ({warning!r}):\n{log[-3000:]}"


def test_installed_wheel_trains_from_an_empty_folder(venv, user_dir):
    where = run([venv / "bin" / "python", "-c",
                 "import gencompare, gencompare.cli as cli; print(gencompare.__file__); print(cli.CONFIG_PATH)"],
                cwd=user_dir)
    assert where.returncode == 0, where.stderr
    module_file, config_path = where.stdout.split()
    assert Path(module_file).is_relative_to(venv), f"imported {module_file}, not the wheel installed in {venv}"
    assert config_path == "pkg://gencompare.conf"

    proc = run([venv / "bin" / "gencompare", "train", "model=vae", "dataset=ring8", "trainer.max_steps=20",
                "logger=none", "metrics=none"], cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (metrics,) = (user_dir / "outputs").rglob("metrics.json")
    assert isinstance(json.loads(metrics.read_text()), dict)
    cfg = OmegaConf.load(metrics.parent / "config.yaml")  # the overrides reached the run
    assert (cfg.model.name, cfg.dataset.name, cfg.trainer.max_steps) == ("vae", "ring8", 20)


def test_installed_wheel_help_lists_the_config_groups(venv, user_dir):
    proc = run([venv / "bin" / "gencompare", "train", "--help"], cwd=user_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    lines = out.splitlines()
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")):
        options = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        assert f"{group.name}: {options}" in lines, f"--help does not list {group.name}: {options}\n{out}"
    assert not list(user_dir.iterdir()), "--help must not create a run dir"


def test_installed_wheel_names_the_choices_of_a_mistyped_group(venv, user_dir):
    """The CLI's own check lists a group's configs from the installed package."""
    proc = run([venv / "bin" / "gencompare", "train", "model=vea"], cwd=user_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model=vea is not a model config; choose one of: ddpm, gan, nade, pacgan2d, vae" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # ~35 s on 2 shared cores: two worker processes each import torch
def test_installed_wheel_sweeps_with_the_joblib_launcher(venv, user_dir):
    """Each joblib worker is a separate process that must find the packaged configs too."""
    proc = run([venv / "bin" / "gencompare", "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                "model=vae", "dataset=ring8", "seed=0,1", "trainer.max_steps=5", "logger=none", "metrics=none"],
               cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent.name for p in (user_dir / "outputs" / "multirun").rglob("metrics.json"))
    assert jobs == ["0_seed-0", "1_seed-1"]  # named by the swept values (gencompare/sweep_dirs.py)


def test_source_checkout_uses_its_configs(user_dir):
    """In the editable install (`make setup`) and with the checkout merely on sys.path, the
    CLI reads this checkout's conf/, so an edit there takes effect without reinstalling."""
    code = ("import importlib.resources as r, gencompare, gencompare.cli as cli; "
            "root = r.files(cli.CONF_PACKAGE) if cli.CONFIG_PATH.startswith('pkg://') else cli.CONFIG_PATH; "
            "print(gencompare.__file__); print(root); print(','.join(cli._group_options('model')))")
    models = ",".join(sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
    # this interpreter: the editable install when gencompare comes from this checkout
    here = run([sys.executable, "-c", code], cwd=user_dir)
    assert here.returncode == 0, here.stderr
    module_file, root, options = here.stdout.split()
    if not Path(module_file).is_relative_to(ROOT):
        pytest.skip(f"gencompare is installed from {module_file}, not from this checkout")
    assert (Path(root), options) == (CONF, models)
    # -S: no site-packages .pth files, so no editable finder: the checkout and the dependencies on sys.path only
    bare = run([sys.executable, "-S", "-c", code], cwd=user_dir,
               PYTHONPATH=os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]))
    assert bare.returncode == 0, bare.stderr
    module_file, root, options = bare.stdout.split()
    assert (Path(module_file).parent.parent, Path(root), options) == (ROOT, CONF, models)
