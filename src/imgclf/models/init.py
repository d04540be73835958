"""Weight initialisation: every scheme, in one function."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

from ..errors import ImgclfError

log = logging.getLogger(__name__)

INIT_SCHEMES = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "normal", "zeros", "torch_default")


def init_weights(model: nn.Module, scheme: str = "xavier_uniform", std: float = 0.01,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Initialise every Conv2d and Linear weight by `scheme`; biases start at zero.

    fan_in = in_channels·kh·kw (in_features for Linear), fan_out = out_channels·kh·kw.
    - xavier_uniform (Glorot, the default): W ~ U(−a, a), a = √(6 / (fan_in + fan_out))
    - xavier_normal: W ~ N(0, σ²), σ = √(2 / (fan_in + fan_out))
    - he_uniform (Kaiming, for ReLU): W ~ U(−a, a), a = √(6 / fan_in)
    - he_normal: W ~ N(0, σ²), σ = √(2 / fan_in)
    - normal: W ~ N(0, std²), std set by `std` (config `init_std`; the course's "large" init is 1.0)
    - zeros: W = 0, which never breaks the symmetry between units (the course's counter-example)
    - torch_default: PyTorch's own reset_parameters (Kaiming-uniform, a=√5), biases included
    Batch-norm layers always start at weight 1, bias 0 (the identity).
    """
    if scheme not in INIT_SCHEMES:
        raise ImgclfError(f"init {scheme!r} is not one of: {', '.join(INIT_SCHEMES)}")
    n_layers = 0
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        n_layers += 1
        if scheme == "torch_default":
            m.reset_parameters()
            continue
        w = m.weight
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        with torch.no_grad():
            if scheme == "xavier_uniform":
                a = math.sqrt(6.0 / (fan_in + fan_out))
                w.uniform_(-a, a, generator=generator)
            elif scheme == "xavier_normal":
                w.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)
            elif scheme == "he_uniform":
                a = math.sqrt(6.0 / fan_in)
                w.uniform_(-a, a, generator=generator)
            elif scheme == "he_normal":
                w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
            elif scheme == "normal":
                w.normal_(0.0, std, generator=generator)
            else:  # zeros
                w.zero_()
            if m.bias is not None:
                m.bias.zero_()
    log.info("init: %s on %d conv/linear layers, biases zero, batch norm (1, 0)", scheme, n_layers)
    return model
