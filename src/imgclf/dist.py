"""Process-group facts for torchrun (DDP). Only rank 0 writes files; sampling is sharded by rank.

Single-process runs see rank 0 of world size 1, so every call site works unchanged under torchrun.
"""
from __future__ import annotations

import torch.distributed as torch_dist


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_available() and torch_dist.is_initialized() else 0


def world_size() -> int:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_world_size()
    return 1


def is_main() -> bool:
    return rank() == 0
