"""Rewrite tests/golden/families.json from the code as it is now.

    python tests/golden/regenerate.py               # every case
    python tests/golden/regenerate.py --only ddpm-mnist,vae-ring8
    python tests/golden/regenerate.py --spread 2     # writes nothing: how far 2 threads land

``--spread N`` trains every case on N torch threads, whose reductions round in another
order, and prints each case's largest relative difference from the stored goldens: the
size of the rounding noise that the tolerance of tests/test_golden.py must admit.

Run it only when a change of what a family computes is meant, and commit the new file on
its own with a message that says why the numbers moved. Cases not named by --only keep
their stored values; the environment (torch release, CPU kernels) is that of this run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from golden_cases import CASES, GOLDEN_FILE, environment, measure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--spread", type=int, metavar="THREADS", help="compare runs on THREADS threads; write nothing")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - {c.name for c in CASES})
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(c.name for c in CASES)}")
    old = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.is_file() else {"cases": {}}
    if args.spread:
        return spread(old["cases"], names, args.spread)
    if names and old.get("environment") not in (None, environment()):
        parser.error(f"the stored goldens come from {old['environment']}, this is {environment()}: regenerate all")
    cases = dict(old["cases"]) if names else {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if names and case.name not in names:
                continue
            print(f"{case.name} ...", flush=True)
            cases[case.name] = measure(case, Path(tmp) / case.name / "run", Path(tmp) / "data")
    GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    out = {"environment": environment(), "cases": {c.name: cases[c.name] for c in CASES if c.name in cases}}
    GOLDEN_FILE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_FILE} ({len(out['cases'])} cases)")
    return 0


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a)


def spread(goldens: dict, names: list[str], threads: int) -> int:
    print(f"largest relative difference from the goldens on {threads} threads, per case")
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if (names and case.name not in names) or case.name not in goldens:
                continue
            got = measure(case, Path(tmp) / case.name / "run", Path(tmp) / "data", threads=threads)
            losses = weights = 0.0
            identical = True
            for seed, want in goldens[case.name]["seeds"].items():
                have = got["seeds"][seed]
                losses = max([losses, *(_rel(a, b) for k, v in want["losses"].items()
                                        for a, b in zip(have["losses"][k], v) if a is not None and b is not None)])
                weights = max(weights, *(_rel(have["weights"][k], want["weights"][k]) for k in ("sum_abs", "sum_sq")))
                identical &= have["weights"]["sha256"] == want["weights"]["sha256"]
            print(f"{case.name:26s} losses {losses:.1e}  weights {weights:.1e}  "
                  f"{'bit-identical' if identical else 'rounded differently'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
