"""Search spaces: config keys mapped to Optuna distributions, checked once, before any trial.

A space is a YAML file (or a dict) such as

    learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    num_channels: {type: int, low: 8, high: 32, step: 8}
    batch_size: {type: categorical, choices: [16, 32, 64]}
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ..config import Config, load_config
from ..errors import ImgclfError

TYPES = ("float", "int", "categorical")
FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


# ---------------------------------------------------------------------------------------------
# The search space


def load_space(space: str | Path | dict, fixed: dict[str, Any] | None = None) -> dict[str, BaseDistribution]:
    """Parse and check a search space once: {config key: {type, low, high, log, step, choices}}.

    Each key must be a config key not also FIXED (by --set); every bound and choice must itself
    be a valid config value. Returns {key: Optuna distribution}.
    """
    source, raw = _read_space(space)
    if not isinstance(raw, dict) or not raw:
        raise ImgclfError(f"{source}: expected a mapping of config keys to distributions, e.g. "
                          "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    fixed = fixed or {}
    out = {}
    for key, spec in raw.items():
        where = f"{source}: {key}"
        if key not in Config.model_fields:
            raise ImgclfError(f"{where}: unknown config key; valid keys: {', '.join(Config.model_fields)}")
        if key in fixed:
            raise ImgclfError(f"{where}: is both searched here and fixed by --set; drop one of them")
        out[key] = _distribution(where, spec)
        values = out[key].choices if isinstance(out[key], CategoricalDistribution) else (out[key].low, out[key].high)
        for v in values:  # bounds and choices must be valid values: no trial fails on its config alone
            try:
                load_config(overrides={**fixed, key: v})
            except ImgclfError as e:
                raise ImgclfError(f"{where}: {v!r} is not a valid value ({e}); change the range or choices") from None
    return out


def _read_space(space: str | Path | dict) -> tuple[str, Any]:
    if isinstance(space, dict):
        return "search space", space
    import yaml

    path = Path(space)
    try:
        return str(path), yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImgclfError(f"{path}: search space file not found; check the --space path") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ImgclfError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the file") from None


def _distribution(where: str, spec: Any) -> BaseDistribution:
    """One key's spec → a distribution, with a message that says what to write instead."""
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise ImgclfError(f"{where}: expected {{type: {'|'.join(TYPES)}, ...}}, got {spec!r}")
    kind = spec["type"]
    unknown = set(spec) - FIELDS[kind] - {"type"}
    if unknown:
        raise ImgclfError(f"{where}: {', '.join(sorted(unknown))} not allowed for type {kind}; "
                          f"use {', '.join(sorted(FIELDS[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ImgclfError(f"{where}: missing choices; give a list, e.g. choices: [16, 32, 64]")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ImgclfError(f"{where}: choices must be numbers, strings, booleans or null, got {choices!r}")
        return CategoricalDistribution(choices)
    number = int if kind == "int" else (int, float)
    low, high, step = (_numeric(spec.get(f), kind) for f in ("low", "high", "step"))
    for field, v in (("low", low), ("high", high)):
        if not isinstance(v, number) or isinstance(v, bool):
            raise ImgclfError(f"{where}: missing or non-{kind} {field} ({spec.get(field)!r}); give low and high, "
                              f"e.g. {{type: {kind}, low: 1, high: 10}}")
    log_ = bool(spec.get("log", False))
    if low > high:
        raise ImgclfError(f"{where}: low {low} > high {high}; swap them")
    if log_ and low <= 0:
        raise ImgclfError(f"{where}: log: true needs low > 0 (got {low}); raise low or drop log")
    if step is not None and (not isinstance(step, number) or isinstance(step, bool) or step <= 0):
        raise ImgclfError(f"{where}: step must be a positive {kind} (got {spec['step']!r})")
    if log_ and step is not None and step != 1:
        raise ImgclfError(f"{where}: log and step cannot be combined; drop one of them")
    if kind == "int":
        return IntDistribution(low, high, log=log_, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log_, step=None if step is None else float(step))


def _numeric(v: Any, kind: str) -> Any:
    """A numeric string as its number, else `v` unchanged (for the caller to reject).

    PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string, not a float.
    """
    if not isinstance(v, str):
        return v
    try:
        x = float(v)
    except ValueError:
        return v
    if not math.isfinite(x):
        return v
    return int(x) if kind == "int" and x.is_integer() else x


def grid_of(space: dict[str, BaseDistribution], source: str = "search space") -> dict[str, list]:
    """Every value of every key, for GridSampler; a float range needs a step."""
    grid = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            grid[key] = list(d.choices)
        elif d.step is None:
            raise ImgclfError(f"{source}: {key}: a float range has no grid; give it a step "
                              "(e.g. step: 0.1) or make it categorical, or use --sampler tpe|random")
        else:
            n = int(math.floor((d.high - d.low) / d.step + 1e-9)) + 1
            grid[key] = [d.low + i * d.step if isinstance(d, IntDistribution) else round(d.low + i * d.step, 12)
                         for i in range(n)]
    return grid


def suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The trial's sampled value of every key of SPACE."""
    out = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            out[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            out[key] = trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
    return out
