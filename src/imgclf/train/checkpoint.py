"""Checkpoints that describe themselves and never execute code when loaded.

`NAME.safetensors` holds the weights (and batch-norm buffers); `NAME.json` holds everything else:
the model name and arguments, classes, input size, normalisation, the config, the epoch and its
metrics, the seed, the manifest hash, the imgclf version, and the weights file's sha256 so that
a torn pair (new weights, old sidecar) is detected instead of silently mixed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load as st_load, save as st_save

from .. import __version__
from ..errors import ImgclfError
from ..fileio import atomic_write_bytes, atomic_write_json, read_json
from ..models import create_model

FORMAT = "imgclf-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(run_dir: str | Path, name: str, model: nn.Module, meta: dict) -> None:
    """Write NAME.safetensors, then NAME.json (both atomically)."""
    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = st_save(state, metadata={"format": FORMAT})
    atomic_write_bytes(run_dir / f"{name}.safetensors", blob)
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "imgclf": __version__, **meta,
               "weights_sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(run_dir / f"{name}.json", sidecar)


def read_checkpoint(run_dir: str | Path, name: str = "best") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, sidecar) of RUN/NAME; checks the format and that the pair belongs together."""
    run_dir = Path(run_dir)
    w, j = run_dir / f"{name}.safetensors", run_dir / f"{name}.json"
    if not w.exists() or not j.exists():
        raise ImgclfError(f"{run_dir}: no {name} checkpoint ({w.name} + {j.name}); train the run first "
                          "or pick --checkpoint best|last")
    meta = read_json(j)
    if meta.get("format") != FORMAT:
        raise ImgclfError(f"{j}: not an imgclf checkpoint sidecar")
    blob = w.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise ImgclfError(f"{w}: does not match {j.name} (interrupted write?); use the other checkpoint "
                          "(--checkpoint last|best) or retrain")
    try:
        state = st_load(blob)  # safetensors: raw tensors only, no code can run
    except Exception as e:
        raise ImgclfError(f"{w}: not a readable safetensors file ({e})") from None
    return state, meta


def load_checkpoint(run_dir: str | Path, name: str = "best", device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict]:
    """Rebuild the model from the sidecar, load its weights, and return it in eval mode."""
    state, meta = read_checkpoint(run_dir, name)
    model = create_model(meta["model"], n_classes=len(meta["classes"]), in_channels=meta["input"]["channels"],
                         image_size=meta["input"]["size"], **meta["model_args"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta
