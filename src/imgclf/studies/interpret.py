"""Generated readings of a study: every sentence is built from, and quotes, a measured number.

Thresholds (named here, printed in the report):
- chance: final valid accuracy within CHANCE_MARGIN of 1/K.
- symmetry: every unit of a layer has the same weight vector (max difference ≤ SAME_ATOL).
- exploding/vanishing, within one run: at step 0 each conv/linear layer multiplies the std of the
  signal it receives by its gain, output std / input std; the growth per layer is the geometric
  mean of the gains. Over GROWTH× per layer reads as exploding, under 1/GROWTH× as vanishing. He
  init, the right scale for ReLU networks, measures about 1.5–2 (√2 from the ReLU, more from the
  mean that ReLU and max-pooling add to each layer's input), so GROWTH = 4 leaves it a 2× margin.
  The gain, not std(layer k+1) / std(layer k), because batch norm re-normalises between layers:
  there the ratio of consecutive outputs stays near 1 however large the weights are.
- exploding/vanishing against the reference: a layer's activation std at step 0 is over EXPLODE×
  (under 1/EXPLODE×) the reference scheme's (xavier_uniform when in the study).
- bias: final train error above HIGH_BIAS; variance: best-epoch train–valid gap above HIGH_VARIANCE.
"""
from __future__ import annotations

import math

import numpy as np

CHANCE_MARGIN = 0.05
SAME_ATOL = 1e-7
EXPLODE = 10.0
GROWTH = 4.0
HIGH_BIAS = 0.10
HIGH_VARIANCE = 0.05
THRESHOLDS = {"chance margin": CHANCE_MARGIN, "identical weights atol": SAME_ATOL,
              "exploding/vanishing growth per layer": GROWTH,
              "exploding/vanishing factor against the reference": EXPLODE, "high bias: train error >": HIGH_BIAS,
              "high variance: train−valid gap >": HIGH_VARIANCE}


def identical_unit_layers(weights: dict[str, np.ndarray]) -> list[tuple[str, int, float]]:
    """(layer, n_units, max difference) of each conv/linear weight whose units are all identical."""
    out = []
    for name, w in weights.items():
        if w.ndim < 2 or w.shape[0] < 2:
            continue
        units = w.reshape(w.shape[0], -1)
        diff = float(np.abs(units - units[0]).max())
        if diff <= SAME_ATOL:
            out.append((name.removesuffix(".weight"), w.shape[0], diff))
    return out


def layer_gains(s0: dict[str, dict]) -> dict[str, float]:
    """Each layer's gain at one step: its output std / the std of its input (layers with a finite,
    non-zero input std only, e.g. none after the first in a network whose signal is all zeros)."""
    return {ly: v["act_std"] / v["in_std"] for ly, v in s0.items()
            if math.isfinite(v.get("in_std", math.nan)) and v["in_std"] > 0 and math.isfinite(v["act_std"])}


def growth_per_layer(s0: dict[str, dict]) -> float | None:
    """The geometric mean of the layers' gains (0 when a layer outputs a constant); None without gains."""
    gains = list(layer_gains(s0).values())
    if not gains:
        return None
    if min(gains) == 0.0:
        return 0.0
    return math.exp(sum(math.log(g) for g in gains) / len(gains))


def growth_reading(name: str, s0: dict[str, dict]) -> str | None:
    """An exploding/vanishing sentence from the growth of the activation std per layer at step 0."""
    gains, growth = layer_gains(s0), growth_per_layer(s0)
    if growth is None or 1 / GROWTH <= growth <= GROWTH:
        return None
    exploding = growth > GROWTH
    ly = (max if exploding else min)(gains, key=gains.get)
    if growth == 0.0:
        return (f"{name}: at step 0 layer {ly} turns an input of std {s0[ly]['in_std']:.3g} into an output of std 0 "
                "(gain ×0) → vanishing activations: no signal reaches the layers after it")
    return (f"{name}: at step 0 the activation std {'grows' if exploding else 'shrinks'} ×{growth:.3g} per layer "
            f"(geometric mean of {len(gains)} layer gains, output std / input std; "
            f"{'largest' if exploding else 'smallest'} ×{gains[ly]:.3g} in {ly}) "
            f"→ {'exploding' if exploding else 'vanishing'} activations")


def init_readings(runs: dict[str, dict], n_classes: int, reference: str | None, threshold: float = 0.8) -> list[str]:
    """Sentences about init schemes. runs[name] has rows, stats (step → layer → values), weights."""
    chance, ln_k = 1.0 / n_classes, math.log(n_classes)
    out = []
    ref0 = runs[reference]["stats"].get(0, {}) if reference in runs else {}
    for name, r in runs.items():
        last, first = r["rows"][-1], r["rows"][0]
        if last["valid_acc"] <= chance + CHANCE_MARGIN:
            out.append(f"{name}: valid accuracy {last['valid_acc']:.3f} after {len(r['rows'])} epochs is chance "
                       f"level (1/{n_classes} = {chance:.3f}) → the network did not learn")
        if abs(last["train_loss"] - ln_k) < 0.05:
            out.append(f"{name}: the training cost stays at {last['train_loss']:.4f} ≈ ln {n_classes} = {ln_k:.4f} "
                       "→ the output is uniform, nothing is learned")
        for layer, n_units, diff in identical_unit_layers(r["weights"])[:2]:
            out.append(f"{name}: all {n_units} units in layer {layer} have identical weights after training "
                       f"(max difference {diff:.1e}) → symmetry never broken")
        s0 = r["stats"].get(0, {})
        hidden = [ly for ly in s0 if s0[ly]["grad_norm"] == 0.0]
        if s0 and len(hidden) >= len(s0) - 1:
            out.append(f"{name}: at step 0 the weight gradient is exactly 0 in {len(hidden)} of {len(s0)} layers "
                       "→ no learning signal reaches them")
        if first["train_loss"] > 2 * ln_k:
            out.append(f"{name}: epoch-1 training cost {first['train_loss']:.2f} is {first['train_loss'] / ln_k:.1f}× "
                       f"ln {n_classes} → a very poor start (weights too large)")
        growth = growth_reading(name, s0)
        if growth:
            out.append(growth)
        if name != reference and ref0 and s0:
            out.extend(_explode(name, s0, ref0, reference))
    crossed = {n: r["crossed"] for n, r in runs.items() if r["crossed"]}
    if crossed:
        epochs = sorted(set(crossed.values()))  # schemes that cross in the same epoch are tied
        groups = [f"{', '.join(n for n in crossed if crossed[n] == e)} (epoch {e})" for e in epochs]
        never = [n for n in runs if n not in crossed]
        out.append(f"first to valid accuracy {threshold:g}: {groups[0]}"
                   + (f"; then {'; '.join(groups[1:])}" if groups[1:] else "")
                   + (f"; never: {', '.join(never)}" if never else ""))
    return out


def _explode(name: str, s0: dict, ref0: dict, reference: str) -> list[str]:
    ratios = {ly: s0[ly]["act_std"] / ref0[ly]["act_std"] for ly in s0
              if ly in ref0 and ref0[ly]["act_std"] > 0 and np.isfinite(s0[ly]["act_std"])}
    if not ratios:
        return []
    ly_max = max(ratios, key=ratios.get)
    ly_min = min(ratios, key=ratios.get)
    if ratios[ly_max] > EXPLODE:
        return [f"{name}: at step 0 layer {ly_max}'s activation std is {s0[ly_max]['act_std']:.3g} against "
                f"{ref0[ly_max]['act_std']:.3g} with {reference} (×{ratios[ly_max]:.0f}) → exploding activations"]
    if 0 < ratios[ly_min] < 1 / EXPLODE:
        return [f"{name}: at step 0 layer {ly_min}'s activation std is {s0[ly_min]['act_std']:.3g} against "
                f"{ref0[ly_min]['act_std']:.3g} with {reference} (×{ratios[ly_min]:.2g}) → vanishing activations"]
    return []


def regularization_readings(runs: dict[str, dict]) -> list[str]:
    """A bias/variance reading per variant, from its best epoch (the model a user would keep)."""
    out = []
    for name, r in runs.items():
        row = r["best_row"]
        train_err, gap = 1 - row["train_acc"], row["train_acc"] - row["valid_acc"]
        verdict = []
        if train_err > HIGH_BIAS:
            verdict.append(f"high bias (train error {train_err:.1%} > {HIGH_BIAS:.0%})")
        if gap > HIGH_VARIANCE:
            verdict.append(f"high variance (train−valid gap {gap:+.1%} > {HIGH_VARIANCE:.0%})")
        if not verdict:
            verdict.append(f"a good fit (train error {train_err:.1%}, gap {gap:+.1%})")
        out.append(f"{name}: train {row['train_acc']:.1%}, valid {row['valid_acc']:.1%} at epoch {row['epoch']} → "
                   + " and ".join(verdict))
    return out
