"""One rank of tests/test_distributed.py, started by torchrun (2 gloo processes): trains
each case of ``argv[3]`` (a JSON object, case name -> overrides) with
``gencompare.train.train.train`` into ``<argv[1]>/<case>/rank<r>``, data under ``argv[2]``."""
import json
import sys
from pathlib import Path

from conftest import compose_train  # tests/ is sys.path[0]: this script's folder

from gencompare.train.distributed import rank_info, teardown
from gencompare.train.train import train

out, data_dir, cases = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
rank = rank_info().rank
try:
    for name, overrides in cases.items():
        train(compose_train(out / name / f"rank{rank}", data_dir, *overrides))
finally:
    teardown()
