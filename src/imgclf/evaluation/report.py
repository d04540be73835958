"""RUN/report.html: one self-contained page that explains a run (images embedded, no network).

It evaluates the best checkpoint on every split (test-set evaluations are recorded, as always),
draws the figures into RUN/plots/, and puts together: the train/valid/test table, the learning
curves, the confusion matrix and per-class scores, the test images with the highest loss, one
augmented training batch, the dataset summary with validate's warnings, the config, the timing
and the environment.
"""
from __future__ import annotations

import base64
import csv
import html
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..data.augment import Augment, augment_and_normalize
from ..data.cache import present_splits
from ..data.pipeline import Prepared
from ..errors import ImgclfError
from ..fileio import atomic_write_text, read_json
from . import plots
from .metrics import record_metrics, split_predictions

log = logging.getLogger(__name__)

N_WORST = 16
VALIDATE_MAX_IMAGES = 20_000  # above this the report skips the (full-decode) validation pass


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.2f} %"


def _worst(run_dir: Path, logits: torch.Tensor, labels: torch.Tensor, data, split: str, classes: list[str]) -> Path:
    losses = F.cross_entropy(logits, labels, reduction="none")
    order = torch.argsort(losses, descending=True)[:N_WORST].numpy()
    images, _ = data.sources[split].get(np.sort(order))
    by_index = dict(zip(np.sort(order).tolist(), images))
    probs = logits.softmax(1)
    titles, colors = [], []
    for i in order.tolist():
        p = int(probs[i].argmax())
        titles.append(f"true {classes[labels[i]]} · pred {classes[p]}\np={probs[i, p]:.2f} loss={losses[i]:.2f}")
        colors.append("black" if p == labels[i] else "#b00020")
    return plots.image_grid(np.stack([by_index[i] for i in order.tolist()]), titles,
                            run_dir / "plots" / f"worst_{split}.png", columns=8, colors=colors)


def _augmented(run_dir: Path, data: Prepared, cfg: dict, meta: dict) -> Path:
    norm = meta["normalization"]
    src = data.sources["train"]
    idx = np.arange(min(16, len(src)))
    x, y = src.get(idx)
    aug = Augment(cfg.get("crop_pad") or 0, cfg.get("flip", False), cfg.get("brightness", 0.0),
                  cfg.get("contrast", 0.0)) if cfg.get("augment", True) else None
    mean, std = torch.tensor(norm["mean"]), torch.tensor(norm["std"])
    out = augment_and_normalize(torch.from_numpy(np.ascontiguousarray(x)), mean, std,
                                torch.Generator().manual_seed(cfg.get("seed", 0)), aug)  # (B, C, H, W)
    shown = (out * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0, 1).mul(255).round()
    shown = shown.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    titles = [meta["classes"][int(c)] for c in y]
    return plots.image_grid(shown, titles, run_dir / "plots" / "augmented_batch.png", columns=8)


def _dataset_section(data_dir: Path, counts: dict, classes: list[str]) -> str:
    rows = [[c] + [counts[s].get(c, 0) for s in counts] for c in classes]
    rows.append(["total"] + [sum(counts[s].values()) for s in counts])
    out = _table(["class", *counts], rows, "num")
    if sum(sum(v.values()) for v in counts.values()) > VALIDATE_MAX_IMAGES:
        return out + f"<p>Run <code>imgclf validate --data {html.escape(str(data_dir))}</code> for duplicates and leaks.</p>"
    from ..data.validate import validate

    report = validate(data_dir)
    items = [f"{w.get('where', '')}: {w.get('message', w)}" if isinstance(w, dict) else str(w)
             for w in report["errors"] + report["warnings"]]
    listing = "".join(f"<li>{html.escape(i)}</li>" for i in items) or "<li>no warnings: no duplicates, no leaks</li>"
    return out + f"<h3>imgclf validate</h3><ul class=\"warn\">{listing}</ul>"


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#f6f6f8}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 10px;border-bottom:1px solid #e3e3e8;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}.sub{color:#666;margin:0 0 18px}
.headline{font-size:18px;background:#eef5ff;border-radius:8px;padding:12px 16px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
table.num td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}th{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:8px 0}code{background:#f2f2f5;padding:1px 4px;border-radius:3px}
.cols{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}ul.warn li{margin:2px 0}
"""
# Lets a headless browser (and the tests) see that every embedded image decoded.
SCRIPT = """window.addEventListener("load",function(){var ok=Array.prototype.every.call(document.images,
function(i){return i.complete&&i.naturalWidth>0});document.body.setAttribute("data-images-ok",ok?"true":"false");});"""


def write_report(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Evaluate the best checkpoint on every split, draw the figures, and write RUN/report.html."""
    run_dir = Path(run_dir)
    if not (run_dir / "best.json").exists():
        raise ImgclfError(f"{run_dir}: no best checkpoint yet; train the run first")
    info, cfg, rows = read_json(run_dir / "run.json"), read_json(run_dir / "config.json"), _rows(run_dir)
    data_dir = Path(data_dir or info["data_dir"])
    (run_dir / "plots").mkdir(exist_ok=True)
    results, counts, figs = {}, {}, {}
    splits = present_splits(data_dir)
    focus = "test" if "test" in splits else "valid"  # the split whose errors the report shows
    preds, meta, data = split_predictions(run_dir, splits, "best", data_dir)
    for split, (logits, labels) in preds.items():
        results[split] = record_metrics(run_dir, split, "best", logits, labels, meta, data_dir)
        counts[split] = dict(zip(meta["classes"], np.bincount(data.sources[split].labels,
                                                              minlength=len(meta["classes"])).tolist()))
        if split == focus:
            figs["worst"] = (_worst(run_dir, logits, labels, data, split, meta["classes"]), split)
    classes = meta["classes"]
    r = results[focus]
    figs["curves"] = plots.learning_curves(rows, int(meta.get("epoch") or 0), run_dir / "plots" / "learning_curves.png")
    figs["cm"] = plots.confusion_matrix(np.array(r["confusion_matrix"]), classes, run_dir / "plots" / f"confusion_{focus}.png")
    figs["f1"] = plots.per_class_f1(classes, [r["per_class"][c]["f1"] for c in classes],
                                    [r["per_class"][c]["support"] for c in classes], run_dir / "plots" / f"f1_{focus}.png")
    figs["aug"] = _augmented(run_dir, data, cfg, meta)
    page = _page(run_dir, info, cfg, rows, meta, results, counts, figs, focus, data_dir)
    atomic_write_text(run_dir / "report.html", page)
    log.info("report: %s", run_dir / "report.html")
    return run_dir / "report.html"


def _page(run_dir, info, cfg, rows, meta, results, counts, figs, focus, data_dir) -> str:
    classes = meta["classes"]
    r = results[focus]
    lo, hi = r["accuracy_ci95"]
    table = _table(["split", "n", "loss", "accuracy", "95 % CI", "macro F1"],
                   [[s, m["n"], f"{m['loss']:.4f}", _pct(m["accuracy"]), f"{_pct(m['accuracy_ci95'][0])} – "
                     f"{_pct(m['accuracy_ci95'][1])}", f"{m['macro']['f1']:.3f}"] for s, m in results.items()], "num")
    per_class = _table(["class", "precision", "recall", "F1", "support"],
                       [[c, f"{r['per_class'][c]['precision']:.3f}", f"{r['per_class'][c]['recall']:.3f}",
                         f"{r['per_class'][c]['f1']:.3f}", r["per_class"][c]["support"]] for c in classes], "num")
    seconds = [float(x["seconds"]) for x in rows]
    n_train = sum(counts.get("train", {}).values())
    timing = _table(["", ""], [["epochs run", len(rows)], ["best epoch", meta.get("epoch")],
                               ["training time", f"{sum(seconds):.1f} s"],
                               ["mean epoch", f"{np.mean(seconds):.2f} s" if seconds else "–"],
                               ["throughput", f"{n_train * len(rows) / max(sum(seconds), 1e-9):,.0f} train images/s"]])
    env = _table(["", ""], [["imgclf", __version__], ["torch", torch.__version__], ["python", platform.python_version()],
                            ["device", info.get("device")], ["platform", platform.platform()],
                            ["trained", info.get("started")], ["report written", time.strftime("%Y-%m-%dT%H:%M:%S%z")]])
    config = _table(["key", "value"], [[k, v] for k, v in cfg.items()])
    worst_fig, worst_split = figs["worst"]
    name = html.escape(run_dir.name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>imgclf report: {name}</title><style>{CSS}</style></head>
<body><main>
<h1>imgclf run <code>{name}</code></h1>
<p class="sub">{html.escape(str(run_dir.resolve()))} · data {html.escape(str(data_dir))} · {len(classes)} classes</p>
<p class="headline">{focus} accuracy of the best checkpoint (epoch {meta.get('epoch')}, selected on valid):
<b>{_pct(r['accuracy'])}</b> (95 % CI {_pct(lo)} – {_pct(hi)}, n = {r['n']})</p>
<h2>Results (best checkpoint)</h2>{table}
<h2>Learning curves</h2>{_img(figs['curves'], 'learning curves')}
<h2>Errors on {focus}</h2>{_img(figs['cm'], 'confusion matrix')}
<div class="cols"><div>{per_class}</div><div style="flex:1;min-width:380px">{_img(figs['f1'], 'per-class F1')}</div></div>
<h3>The {worst_split} images with the highest loss</h3>{_img(worst_fig, 'highest-loss images')}
<h2>One augmented training batch</h2>{_img(figs['aug'], 'augmented batch')}
<h2>Dataset</h2>{_dataset_section(data_dir, counts, classes)}
<h2>Config</h2>{config}
<h2>Timing</h2>{timing}
<h2>Environment</h2>{env}
</main><script>{SCRIPT}</script></body></html>
"""
