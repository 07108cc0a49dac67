"""Training batches from an image folder, resident against streamed: how many images per
second each path delivers on this machine, and what loading costs.

    .venv/bin/python benchmarks/streaming.py [--folder DIR] [--images 2000] [--batch 100]
        [--batches 40] [--workers 0,1,2] [--resolution 32]

Without ``--folder`` it writes ``--images`` generated 40x48 RGB PNGs (tests/image_data.py)
to a temporary folder. For each path it times :func:`gencompare.data.load_dataset`
(``dataset.stream=false``, then ``true`` with each worker count) and ``--batches`` draws of
``DataBundle.batches`` after a first, untimed one (which starts the workers). The resident
path is loaded twice and the second load reported, so that neither path pays the first
import of PIL and torchvision. Set ``OMP_NUM_THREADS`` as for training.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="an image folder (default: generated PNGs)")
    parser.add_argument("--images", type=int, default=2000, help="generated PNGs (without --folder)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per path")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to try when streaming")
    parser.add_argument("--resolution", type=int, default=32)
    args = parser.parse_args()

    from gencompare.data import load_dataset

    tmp = None
    if args.folder:
        root = Path(args.folder).expanduser()
    else:
        from image_data import write_png_folder

        tmp = tempfile.TemporaryDirectory()
        root = write_png_folder(Path(tmp.name) / "pngs", per_class=args.images // 2, size=(40, 48), unreadable=False)

    def cfg(**kw):
        return OmegaConf.create({"name": "image_folder", "path": str(root), "resolution": args.resolution,
                                 "channels": 3, "build_seed": 0, "test_fraction": 0.1, "valid_fraction": 0.05, **kw})

    print(f"{root}: {args.batches} batches of {args.batch} after a first one; CPUs {len(os.sched_getaffinity(0))} usable of {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    runs = [(False, 0), (False, 0)] + [(True, int(w)) for w in args.workers.split(",")]
    for i, (stream, workers) in enumerate(runs):
        start = time.perf_counter()
        bundle = load_dataset(cfg(stream=stream, num_workers=workers))
        load_s = time.perf_counter() - start
        batches = bundle.batches(args.batch, seed=0)
        next(batches)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        draw_s = time.perf_counter() - start
        getattr(batches, "close", lambda: None)()
        if i == 0:
            continue  # the first load imports PIL and torchvision
        path = f"streamed, {workers} workers" if stream else "resident"
        print(f"| {path} | {load_s:.2f} s | {args.batches * args.batch / draw_s:,.0f} images/s "
              f"| {1e3 * draw_s / args.batches:.1f} ms per batch |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
