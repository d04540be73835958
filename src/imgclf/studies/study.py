"""Controlled side-by-side experiments: `imgclf study init` and `imgclf study regularization`.

Every variant trains with the same config, seed, data order and augmentation draws; only the
variant's own keys differ. Each variant is a normal run directory STUDY/<name>; the study adds
summary.json, summary.md, compare.md + compare_valid.png (overlaid valid curves) and report.html
with the per-layer statistics at step 0 and at the end of epoch 1 and the generated readings.

Running a study again into the same STUDY reuses a variant's run only when it finished and its
config.json (and data folder) is the one this study would train; otherwise the old run is kept
beside it as STUDY/<name>.replaced-N and the variant is trained again.
"""
from __future__ import annotations

import csv
import html
import json
import logging
import math
import re
from pathlib import Path

from ..config import Config, load_config
from ..data.manifest import load_split
from ..errors import ImgclfError
from ..evaluation.compare import compare
from ..evaluation.metrics import evaluate
from ..evaluation.report import CSS, _img, _table
from ..fileio import atomic_write_json, atomic_write_text, read_json
from ..models.init import INIT_SCHEMES
from ..train.fit import RESUME_MAY_CHANGE, fit
from .interpret import GROWTH, THRESHOLDS, growth_per_layer, init_readings, layer_gains, regularization_readings

log = logging.getLogger(__name__)

NO_REGULARIZATION = {"weight_decay": 0.0, "dropout_rate": 0.0, "augment": False, "early_stopping_patience": 0}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def parse_init_schemes(text: str) -> dict[str, dict]:
    """'zeros,normal:1.0,he_normal' → {name: config overrides}; `normal:STD` sets init_std."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        scheme, _, arg = item.partition(":")
        if scheme not in INIT_SCHEMES:
            raise ImgclfError(f"--schemes: {scheme!r} is not one of {', '.join(INIT_SCHEMES)}")
        ov = {"init": scheme}
        if arg:
            try:
                ov["init_std"] = float(arg)
            except ValueError:
                raise ImgclfError(f"--schemes: {item!r}: the part after ':' must be a std, e.g. normal:1.0") from None
        out[_safe(item)] = ov
    if not out:
        raise ImgclfError("--schemes: give at least one scheme, e.g. zeros,xavier_uniform,he_normal")
    return out


def parse_reg_variants(text: str) -> dict[str, dict]:
    """'none,l2:1e-3,dropout:0.5,augment,early_stop[:N]' → {name: overrides}, each on top of none."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        kind, _, arg = item.partition(":")
        ov = dict(NO_REGULARIZATION)
        try:
            if kind == "none":
                pass
            elif kind == "l2":
                ov["weight_decay"] = float(arg or 1e-4)
            elif kind == "dropout":
                ov["dropout_rate"] = float(arg or 0.5)
            elif kind == "augment":
                ov["augment"] = True
            elif kind == "early_stop":
                ov["early_stopping_patience"] = int(arg or 3)
            else:
                raise ImgclfError(f"--variants: {kind!r} is not one of none, l2[:λ], dropout[:p], augment, "
                                  "early_stop[:patience]")
        except ValueError:
            raise ImgclfError(f"--variants: {item!r}: the part after ':' must be a number") from None
        out[_safe(item)] = ov
    if not out:
        raise ImgclfError("--variants: give at least one variant, e.g. none,l2:1e-3,dropout:0.5")
    return out


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items()} | {"epoch": int(r["epoch"])} for r in csv.DictReader(f)]


def _finished(run: Path, epochs: int) -> bool:
    """Whether RUN trained to its end: all epochs, or stopped early by its patience."""
    if not ((run / "best.json").exists() and (run / "metrics.csv").exists()):
        return False
    rows, best = _rows(run), read_json(run / "best.json")
    patience = best["config"].get("early_stopping_patience", 0)
    return len(rows) >= epochs or (patience > 0 and len(rows) - best["epoch"] >= patience)


def _differences(run: Path, cfg: Config, data_dir: Path) -> dict[str, tuple]:
    """{key: (the run's value, this study's)} for each config key, and the data folder, in which the
    run in RUN differs from the one this study asks for; {} when none does or RUN holds no run."""
    if not (run / "config.json").exists():
        return {}
    recorded = read_json(run / "config.json")
    # what fit writes into config.json, through JSON so that tuples/lists and ints/floats compare alike
    wanted = json.loads(json.dumps(cfg.resolved().model_dump()))
    diff = {k: (recorded.get(k), v) for k, v in wanted.items() if k not in RESUME_MAY_CHANGE and recorded.get(k) != v}
    run_data = read_json(run / "run.json").get("data_dir") if (run / "run.json").exists() else None
    if run_data is not None and run_data != str(data_dir.resolve()):
        diff["data"] = (run_data, str(data_dir.resolve()))
    return diff


def _keep_aside(run: Path) -> Path:
    """Rename RUN to the first free RUN.replaced-N; nothing is deleted."""
    k = 1
    while (aside := run.with_name(f"{run.name}.replaced-{k}")).exists():
        k += 1
    run.rename(aside)
    return aside


def _train_or_reuse(name: str, run: Path, cfg: Config, data_dir: Path, overrides: dict) -> None:
    """Reuse RUN if it finished with exactly this config; else train it (keeping a differing run aside)."""
    diff = _differences(run, cfg, data_dir)
    if diff:
        aside = _keep_aside(run)
        log.warning("study: %s was trained with %s; this study asks for %s. Kept it as %s; training %s again",
                    run, ", ".join(f"{k}={old}" for k, (old, _) in diff.items()),
                    ", ".join(f"{k}={new}" for k, (_, new) in diff.items()), aside, name)
    elif _finished(run, cfg.num_epochs):
        log.info("study: %s is already trained in %s with this config; reusing it", name, run)
        return
    elif (run / "config.json").exists():
        log.info("study: %s in %s did not finish; training it again from the start", name, run)
    log.info("study: training %s (%s)", name, ", ".join(f"{k}={v}" for k, v in overrides.items()))
    fit(data_dir, run, cfg, overwrite=run.exists(), report=False)


def _collect(run: Path, threshold: float, end_of_epoch_1: int) -> dict:
    from safetensors.numpy import load_file

    rows = _rows(run)
    stats_path = run / "layer_stats.json"
    stats = {r["step"]: r["layers"] for r in read_json(stats_path)} if stats_path.exists() else {}
    weights = {k: v for k, v in load_file(run / "last.safetensors").items() if k.endswith("weight") and v.ndim >= 2}
    crossed = next((r["epoch"] for r in rows if r["valid_acc"] >= threshold), None)
    best = read_json(run / "best.json")
    return {"rows": rows, "stats": {0: stats.get(0, {}), 1: stats.get(end_of_epoch_1, {})}, "weights": weights,
            "crossed": crossed, "best_epoch": best["epoch"]}


def run_study(kind: str, data_dir: str | Path, variants: dict[str, dict], out: str | Path, epochs: int = 3,
              threshold: float = 0.8, overrides: dict | None = None) -> dict:
    """Train every variant (reusing the ones finished in `out` with the same config), then write the
    summary and report."""
    data_dir, out = Path(data_dir), Path(out)
    base = {**(overrides or {}), "num_epochs": epochs}
    cfg0 = load_config(overrides=base)
    n_train = len(load_split(data_dir, "train"))
    # batches per epoch, as train_loader counts them (it drops a last batch of one image)
    per_epoch = n_train // cfg0.batch_size if n_train % cfg0.batch_size == 1 else -(-n_train // cfg0.batch_size)
    # Record every per_epoch - 1 batches: step 0 (the initial weights) and step per_epoch - 1, epoch 1's
    # last batch, which exists even with --epochs 1 (the first batch of epoch 2 would not).
    every, end_of_epoch_1 = max(1, per_epoch - 1), per_epoch - 1
    runs = {}
    for name, ov in variants.items():
        run = out / name
        cfg = load_config(overrides={**base, **ov, "track_stats": every})
        _train_or_reuse(name, run, cfg, data_dir, ov)
        runs[name] = _collect(run, threshold, end_of_epoch_1)
        runs[name]["overrides"] = ov
        evals = {s: evaluate(run, s, "best") for s in ("train", "valid")}  # eval mode: no dropout/augmentation
        runs[name]["best_row"] = {"epoch": runs[name]["best_epoch"], "train_acc": evals["train"]["accuracy"],
                                  "valid_acc": evals["valid"]["accuracy"]}
    classes = read_json(out / next(iter(variants)) / "best.json")["classes"]
    reference = "xavier_uniform" if "xavier_uniform" in runs else None
    readings = init_readings(runs, len(classes), reference, threshold) if kind == "init" else regularization_readings(runs)
    table = compare([out / n for n in variants], metric="valid_acc", out=out)
    summary = _summary(kind, runs, readings, threshold, len(classes), end_of_epoch_1)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", _markdown(summary))
    atomic_write_text(out / "report.html", _html(summary, runs, out, Path(table["files"]["plot"])
                                                  if table.get("files", {}).get("plot") else None))
    log.info("study: %s", out / "report.html")
    return summary


def _summary(kind: str, runs: dict, readings: list[str], threshold: float, n_classes: int,
             end_of_epoch_1: int) -> dict:
    rows = []
    for name, r in runs.items():
        last = r["rows"][-1]
        growth = {"act_std_growth": growth_per_layer(r["stats"][0])} if kind == "init" else {}
        rows.append({"variant": name, **r["overrides"], "epochs": len(r["rows"]),
                     "train_acc": last["train_acc"], "valid_acc": last["valid_acc"], "train_loss": last["train_loss"],
                     "valid_loss": last["valid_loss"], "best_epoch": r["best_epoch"],
                     "eval_train_acc": r["best_row"]["train_acc"], "eval_valid_acc": r["best_row"]["valid_acc"],
                     "gap": r["best_row"]["train_acc"] - r["best_row"]["valid_acc"],
                     f"epoch_valid_acc_{threshold:g}": r["crossed"], **growth})
    layers = {name: {str(k): v for k, v in r["stats"].items()} for name, r in runs.items()}
    return {"kind": kind, "threshold": threshold, "chance": 1 / n_classes, "ln_k": math.log(n_classes),
            "rows": rows, "readings": readings, "thresholds": THRESHOLDS, "layer_stats": layers,
            "layer_stats_steps": {"0": 0, "1": end_of_epoch_1}}


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


GROWTH_NOTE = (f"act_std_growth: at step 0, the geometric mean over the layers of each layer's gain (its output "
               f"std / its input std); over {GROWTH:g} reads as exploding, under 1/{GROWTH:g} as vanishing.")
LAYER_COLUMNS = ("variant", "layer", "act mean", "act std", "input std", "gain", "grad norm")


def _layer_tables(summary: dict) -> list[tuple[str, list[list[str]]]]:
    """(title, rows) of the per-layer tables, one row per (variant, layer); gain = act std / input std."""
    out = []
    titles = {"0": "at step 0 (the initial weights)",
              "1": f"at the end of epoch 1 (its last batch, step {summary['layer_stats_steps']['1']})"}
    for when, title in titles.items():
        rows = []
        for variant, stats in summary["layer_stats"].items():
            gains = layer_gains(stats.get(when, {}))
            rows += [[variant, ly, _fmt(v["act_mean"]), _fmt(v["act_std"]), _fmt(v.get("in_std")),
                      _fmt(gains.get(ly)), _fmt(v["grad_norm"])] for ly, v in stats.get(when, {}).items()]
        if rows:
            out.append((f"Per-layer statistics {title}", rows))
    return out


def _markdown(s: dict) -> str:
    keys = list(s["rows"][0])
    lines = [f"# imgclf study {s['kind']}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in s["rows"]]
    lines += ([""] + [GROWTH_NOTE] if "act_std_growth" in keys else [])
    lines += ["", "## Readings", ""] + [f"- {t}" for t in s["readings"]]
    for title, rows in _layer_tables(s):
        lines += ["", f"## {title}", "", "| " + " | ".join(LAYER_COLUMNS) + " |", "|" + "---|" * len(LAYER_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _layer_html(summary: dict) -> str:
    return "".join(f"<h3>{html.escape(title)}</h3>" + _table(list(LAYER_COLUMNS), rows, "num")
                   for title, rows in _layer_tables(summary))


def _html(summary: dict, runs: dict, out: Path, curves: Path | None) -> str:
    keys = [k for k in summary["rows"][0] if k != "variant"]
    table = _table(["variant", *keys], [[r["variant"], *(_fmt(r[k]) for k in keys)] for r in summary["rows"]], "num")
    readings = "".join(f"<li>{html.escape(t)}</li>" for t in summary["readings"]) or "<li>nothing stood out</li>"
    thresholds = ", ".join(f"{k} {v:g}" for k, v in summary["thresholds"].items())
    plot = _img(curves, "valid curves of every variant") if curves and curves.exists() else ""
    growth_note = f"<br>{html.escape(GROWTH_NOTE)}" if "act_std_growth" in keys else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>imgclf study {summary['kind']}</title><style>{CSS}</style></head>
<body><main>
<h1>imgclf study {html.escape(summary['kind'])}</h1>
<p class="sub">{html.escape(str(out.resolve()))} · {len(runs)} variants · identical seed, data order and augmentation</p>
<h2>Readings</h2><ul class="warn">{readings}</ul>
<p class="sub">Each reading quotes the numbers it rests on. Thresholds: {html.escape(thresholds)}; chance is
{summary['chance']:.3f} and ln K = {summary['ln_k']:.4f}.</p>
<h2>Results</h2>{table}
<p class="sub">train/valid: the last epoch's, measured during training (train with dropout and augmentation);
eval_*: the best checkpoint re-evaluated in eval mode, which the gap uses.{growth_note}</p>
<h2>Valid curves</h2>{plot}
<h2>Layers</h2>{_layer_html(summary)}
<p class="sub">Each conv/linear layer's output (act mean, act std), the std of the input it received, its gain
(act std / input std) and its weights' gradient norm, on one training batch.</p>
</main></body></html>
"""
