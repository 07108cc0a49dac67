"""What one gloo ``all_reduce`` costs between local processes (the floor under
benchmarks/ddp.py's data-parallel overhead on a CPU; results in benchmarks/results/ddp-cpu.md).

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/gloo_allreduce.py

Prints, on rank 0:

- back to back: the mean time of 20 ``all_reduce`` calls (after 3 warm-ups) of float32
  tensors of 400 bytes, 4.4 MB and 15 MB (the MNIST GAN's gradients a step);
- between steps: 1,000 ``all_reduce`` calls of 400 bytes, each after ~0.6 ms of one-thread
  compute (a small MLP's forward and backward, as a 2D model's training step does), timed
  call by call: median, mean and 90th percentile. A training step pays this figure, not the
  back-to-back one: between collectives the gloo threads sleep and the ranks drift apart.
"""
import statistics
import time

import torch
import torch.distributed as dist


def back_to_back() -> list[str]:
    out = []
    for mb in (0.0004, 4.4, 15.0):
        x = torch.ones(int(mb * 1e6 / 4))
        for _ in range(3):
            dist.all_reduce(x)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(x)
        out.append(f"all_reduce {mb} MB back to back: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms")
    return out


def between_steps(calls: int = 1000) -> str:
    torch.manual_seed(dist.get_rank())
    net = torch.nn.Sequential(torch.nn.Linear(2, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 1))
    x, flag = torch.randn(100, 2), torch.zeros(100)
    times = []
    dist.barrier()
    for _ in range(calls + 50):
        net(x).square().mean().backward()
        start = time.perf_counter()
        dist.all_reduce(flag)
        times.append(time.perf_counter() - start)
    ms = sorted(t * 1e3 for t in times[50:])
    return (f"all_reduce 0.0004 MB between steps: median {statistics.median(ms):.2f} ms, mean {statistics.mean(ms):.2f}"
            f" ms, 90th percentile {ms[int(0.9 * len(ms))]:.2f} ms")


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    lines = [*back_to_back(), between_steps()]
    if dist.get_rank() == 0:
        print("\n".join(lines))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
