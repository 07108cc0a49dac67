"""Golden numbers for every family (tests/golden_cases.py): a few CPU steps of GAN, VAE,
NADE and DDPM on points and on MNIST, the GAN's packing, minibatch discrimination and
unrolling, PacGAN's 2D networks and seed batches of 2, compared with the values committed
in tests/golden/families.json. Any change of what a family computes fails here until the
goldens are regenerated on purpose (``python tests/golden/regenerate.py``, in a commit of
its own that says why).

Exact where the arithmetic repeats: on one CPU thread with the same torch release and the
same kernel instruction set (``torch.backends.cpu.get_cpu_capability()``) as the goldens,
every logged scalar and the weights' digest must be equal bit for bit. Elsewhere (another
release or ISA picks other kernels, which round differently) they must agree to relative
tolerances sized on measured rounding noise: ``regenerate.py --spread 2`` (2 threads,
whose reductions round in another order; 2026-12-02, 2-core CPU) moved logged scalars by at
most 3.0e-6 (the unrolled GAN on MNIST; the rest <= 4.4e-7) and the weights' sums by at most
3.4e-9. The DDPM's [0, 1] pixels of 5e8bcb2 moved the 4-step ddpm-mnist loss by 6e-4 to
1.9e-3 and its weights' sum of squares by 2.0e-5, each well outside the tolerances below.
"""
from __future__ import annotations

import json
import math

import pytest

from golden_cases import CASES, GOLDEN_FILE, environment, measure

LOSS_RTOL = 1e-4  # 33x the largest measured rounding noise of a logged scalar
WEIGHT_RTOL = 1e-6  # 300x that of the weights' sums


@pytest.fixture(scope="module")
def goldens() -> dict:
    if not GOLDEN_FILE.is_file():
        pytest.fail(f"{GOLDEN_FILE} is missing: python tests/golden/regenerate.py writes it")
    return json.loads(GOLDEN_FILE.read_text())


def _close(a, b, rtol: float = WEIGHT_RTOL) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_family_computes_its_golden_numbers(case, goldens, tmp_path, data_dir):
    golden = goldens["cases"].get(case.name)
    assert golden is not None, f"no golden for {case.name}: python tests/golden/regenerate.py --only {case.name}"
    assert golden["overrides"] == list(case.overrides), "the case changed: regenerate its golden on purpose"
    got = measure(case, tmp_path / "run", data_dir)
    exact = environment() == goldens["environment"]
    same_data = got["data"]["sha256"] == golden["data"]["sha256"] if exact else \
        got["data"]["count"] == golden["data"]["count"] and _close(got["data"]["sum_sq"], golden["data"]["sum_sq"])
    assert same_data, f"{case.name}: the training data differ from the goldens' ({got['data']} vs {golden['data']})"
    for seed, want in golden["seeds"].items():
        have = got["seeds"][seed]
        assert have["steps"] == want["steps"]
        assert have["losses"].keys() == want["losses"].keys(), f"{case.name} seed {seed}: logged scalars differ"
        for key, values in want["losses"].items():
            if exact:
                assert have["losses"][key] == values, f"{case.name} seed {seed}: {key} differs bit-wise"
            else:
                assert all(_close(a, b, LOSS_RTOL) for a, b in zip(have["losses"][key], values)), \
                    f"{case.name} seed {seed}: {key} {have['losses'][key]} vs golden {values}"
        w, gw = have["weights"], want["weights"]
        assert w["count"] == gw["count"], f"{case.name} seed {seed}: the model's size changed"
        if exact:
            assert w["sha256"] == gw["sha256"], f"{case.name} seed {seed}: the final weights differ bit-wise"
        else:
            assert _close(w["sum_abs"], gw["sum_abs"]) and _close(w["sum_sq"], gw["sum_sq"]), \
                f"{case.name} seed {seed}: weights {w} vs golden {gw}"
