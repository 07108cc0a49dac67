"""Build a family from its own YAML (``conf/model/<name>.yaml``) for a data shape, as
``gencompare.build.build_model`` does, with ``model.module.<key>`` overrides: how the
model tests get the networks a run would get (``arch: auto`` and all)."""
from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from gencompare.build import model_arguments

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def from_config(family: str, shape, binary: bool = False, **module):
    """The model of ``conf/model/<family>.yaml`` for ``shape``. ``module`` sets
    ``model.module.<key>`` (a plain value, or a node given as a dict); Python objects that
    are not config values (an optimizer factory) go to the constructor as they are."""
    cfg = OmegaConf.create({"model": OmegaConf.load(CONF / f"{family}.yaml")})
    objects = {k: v for k, v in module.items() if callable(v)}
    for key, value in module.items():
        if key not in objects:
            cfg.model.module[key] = list(value) if isinstance(value, tuple) else value
    build = instantiate(model_arguments(cfg.model), data_shape=list(shape), binary=binary, _convert_="all",
                        _partial_=True)
    return build(**objects)
