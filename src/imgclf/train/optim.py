"""Optimizers and the one place that decides which tensors get L2 weight decay."""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights (ndim ≥ 2) decay; biases and batch-norm parameters don't.

    Decaying a bias or a norm scale only shrinks the model's ability to shift and scale
    activations, and does not reduce its capacity, so they are left alone (as in nanoGPT).
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    log.info("weight decay %.3g on %d tensors (%d params); none on %d tensors (%d params)", weight_decay,
             len(decay), sum(p.numel() for p in decay), len(no_decay), sum(p.numel() for p in no_decay))
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, name: str, learning_rate: float, weight_decay: float,
                     momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """adam/sgd apply weight_decay as L2 (λ·w added to the gradient); adamw decouples it."""
    groups = param_groups(model, weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=learning_rate)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, nesterov=nesterov and momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}")
