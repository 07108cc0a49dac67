"""One rank of tests/test_distributed.py's stop-agreement test, started by torchrun (2 gloo
processes): steps of ``argv[2]`` ms, rank 1 alone asked to stop from step ``argv[1]`` on;
writes ``{"step": the step it stopped after, "agreements": all-reduces launched}`` to
``<argv[3]>/rank<r>.json``."""
import json
import sys
import time
from pathlib import Path

import torch

from gencompare.train.distributed import StopAgreement, setup, teardown

request_at, step_ms, out = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
info = setup(torch.device("cpu"))
agreement = StopAgreement(info, every_s=0.2, max_steps=100)
try:
    for step in range(1, 10_000):
        time.sleep(step_ms / 1000)
        if agreement(info.rank == 1 and step >= request_at):
            break
    (out / f"rank{info.rank}.json").write_text(json.dumps({"step": step, "agreements": agreement.agreements}))
finally:
    teardown()
