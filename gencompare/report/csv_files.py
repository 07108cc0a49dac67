"""comparison.csv (one row per group: mean, std, stderr and count of every metric) and
the CSV writer diagnostics.csv shares."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gencompare.report.groups import Group, baseline_rows, by_variant
from gencompare.report.stats import Stat
from gencompare.report.tables import METRICS


def comparison_rows(groups: Sequence[Group]) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and rows of comparison.csv: a group per row (``<metric>_mean``,
    ``_std``, ``_stderr``, ``_n`` for every metric of the registry), then each variant's
    Parzen baselines."""
    header = ["label", "model", "family", "dataset", "variant", "n", "seeds", "config", "likelihood_kind",
              "feature_network", "device", "runs"]
    for m in METRICS:
        header += [f"{m.name}_mean", f"{m.name}_std", f"{m.name}_stderr", f"{m.name}_n"]

    def put(row: dict, stem: str, st: Stat | None) -> None:
        if st is None:
            return
        for part, v in (("mean", st.mean), ("std", st.std), ("stderr", st.stderr)):
            row[f"{stem}_{part}"] = None if math.isnan(v) else float(v)
        row[f"{stem}_n"] = st.n

    rows = []
    for g in groups:
        row = {"label": g.label, "model": g.model, "family": g.family, "dataset": g.dataset, "variant": g.variant,
               "n": len(g.runs), "seeds": " ".join(map(str, g.seeds)),
               "config": json.dumps(g.differs, default=str) if g.differs else "",
               "likelihood_kind": "/".join(g.strings("likelihood.kind")) or "",
               "feature_network": "/".join(g.strings("features.feature_network")),
               "device": "/".join(g.strings("device")), "runs": " ".join(str(r.path) for r in g.runs)}
        for m in METRICS:
            put(row, m.name, g.stat(m.key, m.scale))
        rows.append(row)
    for variant, vg in by_variant(groups).items():
        for label, mean, stderr, sigma in baseline_rows(vg):
            row = {"label": label, "model": "baseline", "family": "baseline", "dataset": vg[0].dataset,
                   "variant": variant, "n": 1}
            put(row, "parzen_ll", mean)
            put(row, "parzen_stderr", stderr)
            put(row, "parzen_sigma", sigma)
            rows.append(row)
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> Path:
    """Missing values (None, NaN) as empty cells; floats at full precision."""
    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return repr(v) if isinstance(v, float) else v

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    return path
