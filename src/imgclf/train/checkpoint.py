"""Checkpoints that describe themselves and never execute code when loaded.

Resume state (for `imgclf train --resume`) lives in RUN/resume/: `<tag>.safetensors` (weights),
`<tag>.pt` (optimizer, scheduler, scaler, early stopping, RNG states, counters; plain tensors and
containers only, read back with torch.load(weights_only=True)), and `latest.json`, written last,
which names the pair and their sha256. A crash at any moment leaves latest.json naming a complete
older pair; files of older pairs are removed only after it moved on.

`NAME.safetensors` holds the weights (and batch-norm buffers); `NAME.json` holds everything else:
the model name and arguments, classes, input size, normalisation, the config, the epoch and its
metrics, the seed, the manifest hash, the imgclf version, and the weights file's sha256 so that
a torn pair (new weights, old sidecar) is detected instead of silently mixed.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load as st_load, save as st_save

from .. import __version__
from ..errors import ImgclfError
from ..fileio import BackgroundWriter, atomic_write_bytes, atomic_write_json, read_json, run_now_or_later
from ..models import create_model

FORMAT = "imgclf-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(run_dir: str | Path, name: str, model: nn.Module, meta: dict,
                    writer: BackgroundWriter | None = None) -> None:
    """Snapshot the weights now; write NAME.safetensors, then NAME.json (atomically, maybe on `writer`)."""
    run_dir = Path(run_dir)
    blob = _state_dict_blob(model)
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "imgclf": __version__, **meta,
               "weights_sha256": hashlib.sha256(blob).hexdigest()}
    run_now_or_later(writer, _write_pair, run_dir / f"{name}.safetensors", blob, run_dir / f"{name}.json", sidecar)


def _write_pair(weights_path: Path, blob: bytes, json_path: Path, sidecar: dict) -> None:
    atomic_write_bytes(weights_path, blob)
    atomic_write_json(json_path, sidecar)


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


RESUME_DIR = "resume"


def _state_dict_blob(model: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return st_save(state, metadata={"format": FORMAT})


def safe_torch_load(blob: bytes, path: Path):
    """torch.load that accepts only tensors and plain containers; anything else is refused unrun."""
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for foreign objects, RuntimeError for junk
        raise ImgclfError(f"{path}: refused to load it: it holds objects other than plain tensors and "
                          f"containers, which could run code ({type(e).__name__}); use a checkpoint that "
                          "imgclf wrote, or start a new run") from None


def save_resume(run_dir: str | Path, tag: int, model: nn.Module, state: dict,
                writer: BackgroundWriter | None = None) -> None:
    """Snapshot weights and state now; write the pair for `tag` (a step counter that only grows),
    then point latest.json at it (maybe on `writer`)."""
    d = Path(run_dir) / RESUME_DIR
    weights = _state_dict_blob(model)
    buf = io.BytesIO()
    torch.save(state, buf)  # serialised here, so later training steps cannot change it
    blob = buf.getvalue()
    names = (f"{tag:010d}.safetensors", f"{tag:010d}.pt")
    latest = {"format": FORMAT, "imgclf": __version__, "tag": tag, "epoch": state["epoch"], "batch": state["batch"],
              "weights": names[0], "state": names[1], "weights_sha256": hashlib.sha256(weights).hexdigest(),
              "state_sha256": hashlib.sha256(blob).hexdigest()}
    run_now_or_later(writer, _write_resume, d, names, weights, blob, latest)


def _write_resume(d: Path, names: tuple[str, str], weights: bytes, blob: bytes, latest: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / names[0], weights)
    atomic_write_bytes(d / names[1], blob)
    atomic_write_json(d / "latest.json", latest)
    for p in d.iterdir():
        if p.name not in (*names, "latest.json") and not p.name.startswith("."):
            p.unlink(missing_ok=True)


def has_resume(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RESUME_DIR / "latest.json").exists()


def load_resume(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state dict, training state) of the newest complete resume point."""
    d = Path(run_dir) / RESUME_DIR
    if not has_resume(run_dir):
        raise ImgclfError(f"{run_dir}: no resume state (resume/latest.json); it is written after the first "
                          "epoch or --checkpoint-every steps. Start the run again without --resume")
    latest = read_json(d / "latest.json")
    w_blob, s_blob = (d / latest["weights"]).read_bytes(), (d / latest["state"]).read_bytes()
    for blob, key, name in ((w_blob, "weights_sha256", latest["weights"]), (s_blob, "state_sha256", latest["state"])):
        if hashlib.sha256(blob).hexdigest() != latest[key]:
            raise ImgclfError(f"{d / name}: does not match resume/latest.json; the resume state is damaged. "
                              "Start a new run (best/last checkpoints are still usable)")
    try:
        weights = st_load(w_blob)
    except Exception as e:
        raise ImgclfError(f"{d / latest['weights']}: not a readable safetensors file ({e})") from None
    return weights, safe_torch_load(s_blob, d / latest["state"])
