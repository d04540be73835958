"""The typed training configuration, checked once at the edge.

Sources, later ones winning: the defaults below < `--config params.json` < `--set key=value`.
The key names follow CS230's params.json (`learning_rate`, `batch_size`, `num_epochs`,
`dropout_rate`, `num_channels`), so the course's files load as they are.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ImgclfError

log = logging.getLogger(__name__)

# Shorter spellings users type; mapped to the canonical key before validation.
ALIASES = {"lr": "learning_rate", "epochs": "num_epochs", "dropout": "dropout_rate"}
# CS230 params.json keys that have no meaning here; accepted with a warning so old files load.
IGNORED_CS230_KEYS = {
    "save_summary_steps": "metrics are summarised over every step of an epoch",
    "num_workers": "the cached loader needs no worker processes",
    "cuda": "use device=cuda (or the default device=auto)",
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- model -------------------------------------------------------------------------------
    model: str = Field("cnn", description="architecture: cnn (CS230's SIGNS network) or mlp")
    num_channels: int = Field(32, ge=1, description="cnn: channels of the first conv block; then ×2, ×4")
    fc_units: int = Field(128, ge=1, description="cnn: units of the hidden fully connected layer")
    hidden_units: list[int] = Field([256, 128], description="mlp: units of each hidden layer")
    batch_norm: bool = Field(True, description="batch norm after each conv/hidden layer")
    init: str = Field("xavier_uniform", description="weight init: xavier_uniform, xavier_normal, "
                      "he_uniform, he_normal, normal, zeros, torch_default")
    init_std: float = Field(0.01, gt=0, description="std of init=normal (the course's 'large' init is 1.0)")
    # --- regularisation ----------------------------------------------------------------------
    dropout_rate: float = Field(0.5, ge=0, lt=1, description="probability of zeroing a hidden unit (FC layers)")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty λ: adds λ·w to the gradient of conv/linear "
                                "weights only, never biases or batch-norm parameters")
    augment: bool = Field(True, description="batch augmentation of training images (crop, jitter, flip)")
    crop_pad: Optional[int] = Field(None, ge=0, description="random-crop padding in pixels; null → image_size // 16")
    flip: bool = Field(False, description="random left-right flip; off because it can change a label's "
                       "meaning (hand signs, digits, text)")
    brightness: float = Field(0.1, ge=0, description="brightness jitter, in normalised units (≈ stds)")
    contrast: float = Field(0.1, ge=0, lt=1, description="contrast jitter: scale by U(1 ± contrast)")
    monitor: Literal["valid_acc", "valid_loss"] = Field("valid_acc", description="the valid metric that picks "
                                                        "the best checkpoint and drives early stopping and plateau")
    early_stopping_patience: int = Field(0, ge=0, description="stop after this many epochs without a better "
                                         "`monitor` value, then restore the best weights; 0 = never stop early")
    early_stopping_min_delta: float = Field(0.0, ge=0, description="a better value must beat the best by more than this")
    # --- data --------------------------------------------------------------------------------
    image_size: int = Field(64, ge=1, description="pixels; images are resized to image_size × image_size")
    channels: Literal[1, 3] = Field(3, description="3 = RGB, 1 = greyscale")
    resize: Literal["squash", "center-crop", "pad"] = Field("squash", description="how to reach a square")
    cache: bool = Field(True, description="decode once into a packed uint8 cache; false = decode every epoch")
    # --- optimisation ------------------------------------------------------------------------
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="adamw decays decoupled from the gradient")
    learning_rate: float = Field(1e-3, gt=0, description="step size")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd momentum")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum")
    schedule: Literal["constant", "step", "cosine", "onecycle", "plateau"] = Field(
        "constant", description="learning-rate schedule, stepped per optimizer step (plateau: per epoch)")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up length in epochs (fractions allowed)")
    step_size: int = Field(10, ge=1, description="schedule=step: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="schedule=step/plateau: decay factor")
    min_lr: float = Field(0.0, ge=0, description="schedule=cosine/plateau: the floor of the learning rate")
    plateau_patience: int = Field(3, ge=0, description="schedule=plateau: epochs without improvement before decay")
    grad_clip: float = Field(0.0, ge=0, description="clip the gradients' global L2 norm to this; 0 = off")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step (gradient accumulation)")
    batch_size: int = Field(32, ge=1, description="images per step (CS230 default 32)")
    num_epochs: int = Field(10, ge=1, description="passes over the training set")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    # --- run ---------------------------------------------------------------------------------
    seed: int = Field(230, description="seeds init, data order, augmentation and dropout")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="bf16: autocast on CPU and GPU; fp16: autocast + grad scaler, GPU only; "
        "auto: bf16 where the device has fast bf16 (Ampere+ GPUs, CPUs with AVX512-BF16/AMX), else fp32")
    channels_last: Optional[bool] = Field(None, description="NHWC memory layout; null → on for CUDA, and for "
                                          "bf16 on the CPU (where oneDNN is fastest with it)")
    compile: bool = Field(False, description="torch.compile the model (slow first epoch, faster after)")
    checkpoint_every: int = Field(0, ge=0, description="also save resume state every N optimizer steps; "
                                  "0 = at each epoch's end only")
    track_stats: int = Field(0, ge=0, description="record per-layer activation and gradient statistics every N "
                             "training batches into RUN/layer_stats.json; 0 = off (no hooks at all)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from .models import list_models

        if v not in list_models():
            raise ValueError(f"must be one of {', '.join(list_models())}")
        return v

    @field_validator("init")
    @classmethod
    def _known_init(cls, v: str) -> str:
        from .models.init import INIT_SCHEMES

        if v not in INIT_SCHEMES:
            raise ValueError(f"must be one of {', '.join(INIT_SCHEMES)}")
        return v

    def resolved_crop_pad(self) -> int:
        return self.image_size // 16 if self.crop_pad is None else self.crop_pad

    def resolved(self) -> "Config":
        """This config with its size-dependent defaults filled in, as a run's config.json records it."""
        return self.model_copy(update={"crop_pad": self.resolved_crop_pad()})


def valid_keys() -> list[str]:
    return list(Config.model_fields)


def _normalise_keys(raw: dict[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for k, v in raw.items():
        if k in IGNORED_CS230_KEYS:
            log.warning("%s: ignoring CS230 key %r (%s)", source, k, IGNORED_CS230_KEYS[k])
            continue
        key = ALIASES.get(k, k)
        if key not in Config.model_fields:
            raise ImgclfError(f"{source}: unknown config key {k!r}; valid keys: {', '.join(valid_keys())}")
        out[key] = v
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """`key=value` strings → dict; values are JSON when they parse as JSON, else strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ImgclfError(f"--set {item!r}: expected key=value, e.g. --set learning_rate=0.01")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _validate(values: dict[str, Any], source: str) -> Config:
    try:
        return Config(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ImgclfError(f"{source}: config key {key!r} = {err.get('input')!r}: {msg}") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """Defaults (or `base`) < the JSON file at `path` < `overrides`; every step validated."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ImgclfError(f"{path}: config file not found; check the --config path") from None
        except json.JSONDecodeError as e:
            raise ImgclfError(f"{path} line {e.lineno}: not valid JSON ({e.msg}); fix the file") from None
        if not isinstance(raw, dict):
            raise ImgclfError(f"{path}: expected a JSON object of config keys, e.g. {{\"learning_rate\": 0.001}}")
        values.update(_normalise_keys(raw, str(path)))
        _validate(values, str(path))
    if overrides:
        values.update(_normalise_keys(overrides, "--set"))
    return _validate(values, "--set" if overrides else "config")
