"""What one gloo ``all_reduce`` costs between local processes (the floor under
benchmarks/ddp.py's data-parallel overhead on a CPU; results in benchmarks/results/ddp-cpu.md).

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/gloo_allreduce.py

Prints, on rank 0, the mean time of 20 ``all_reduce`` calls (after 3 warm-ups) of float32
tensors of 400 bytes, 4.4 MB and 15 MB (the MNIST GAN's gradients a step).
"""
import time

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    for mb in (0.0004, 4.4, 15.0):
        x = torch.ones(int(mb * 1e6 / 4))
        for _ in range(3):
            dist.all_reduce(x)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(x)
        if dist.get_rank() == 0:
            print(f"all_reduce {mb} MB: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
