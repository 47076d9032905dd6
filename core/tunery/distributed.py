"""Many processes (``torchrun``, ``accelerate launch``): who writes, and sums across processes.

Training under several processes is transformers.Trainer's and accelerate's work; tunery only
makes sure the run folder is written once, by the main process, and that the counts each process
keeps for itself (tokens seen) are summed before they are reported.
"""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """Whether this process writes the run folder (global rank 0, or no launcher at all)."""
    return int(os.environ.get("RANK", "0")) == 0


def sum_across_processes(values: list[float]) -> list[float]:
    """``values`` summed over every process of the job (unchanged in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    import torch

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()
