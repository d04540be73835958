"""Per-layer statistics of a training step: activation mean/std of each conv/linear output, the std
of the input it received (so a layer's gain, output std / input std, can be read), and the
gradient norm of each layer's weights.

Hooks are registered only when tracking is on (`track_stats` > 0), so a normal run pays nothing.
They record only in training mode and only for the steps they are armed for; the values stay on
the device until `collect` reads them once for that step.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class LayerStats:
    def __init__(self, model: nn.Module, every: int) -> None:
        self.every = every
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.active = self.wants(0)
        self._acts: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # (mean, std, input std)
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers]
        self.records: list[dict] = []

    def wants(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if self.active and module.training:
                out = output.detach().float()
                self._acts[name] = (out.mean(), out.std(), inputs[0].detach().float().std())
        return hook

    def collect(self, step: int, epoch: int) -> dict:
        """Read this step's activations and the weights' gradients (one device sync)."""
        layers = {}
        nan = torch.tensor(float("nan"))
        for name, m in self.layers:
            mean, std, in_std = self._acts.get(name, (nan, nan, nan))
            grad = m.weight.grad
            layers[name] = {"act_mean": float(mean), "act_std": float(std), "in_std": float(in_std),
                            "grad_norm": float(grad.norm()) if grad is not None else float("nan"),
                            "weight_std": float(m.weight.detach().float().std())}
        self._acts.clear()
        record = {"step": step, "epoch": epoch, "layers": layers}
        self.records.append(record)
        return record

    def close(self) -> None:
        for h in self.handles:
            h.remove()
