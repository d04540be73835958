"""Compare runs side by side: the config keys that differ, the best and final metrics, the curves.

Like CS230's `synthesize_results.py`, which walks a folder of experiments and tabulates their
metrics, but it shows only the config keys that differ between the runs, sorts by any metric
(missing values last), adds the test numbers of evaluated runs, and overlays the valid curves.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ImgclfError
from ..fileio import atomic_write_bytes, atomic_write_text, read_json

log = logging.getLogger(__name__)

MISSING = "–"  # an en dash: this run has no such value
# metric -> (higher is better, what it is)
METRICS = {
    "valid_acc": (True, "valid accuracy at the best epoch (best.json)"),
    "valid_loss": (False, "valid loss at the best epoch (best.json)"),
    "train_acc": (True, "train accuracy of the last epoch (metrics.csv)"),
    "test_acc": (True, "test accuracy of the evaluated checkpoint (metrics_test.json, `imgclf evaluate`)"),
    "test_loss": (False, "test loss of the evaluated checkpoint (metrics_test.json)"),
}
SORT_KEYS = (*METRICS, "run")  # `run`: by name
TABLE_FILE, PLOT_FILE = "compare.md", "compare_valid.png"
PLOT_SIZE, PLOT_DPI = (10, 4), 100  # inches and dots per inch: a 1000 x 400 pixel image


# ---------------------------------------------------------------------------------------------
# Finding and reading runs


def is_run(path: Path) -> bool:
    """A run directory holds config.json and run.json (written before the first epoch)."""
    return (path / "config.json").is_file() and (path / "run.json").is_file()


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """The runs among PATHS and, for each path that is not a run, every run below it; no repeats."""
    found, seen = [], set()
    for p in map(Path, paths):
        if not p.is_dir():
            raise ImgclfError(f"{p}: {'not a directory' if p.exists() else 'no such directory'}; pass run "
                              "directories or a folder that contains them")
        for run in _walk(p):
            if run.resolve() not in seen:
                seen.add(run.resolve())
                found.append(run)
    return found


def _walk(root: Path) -> Iterable[Path]:
    if is_run(root):
        yield root
        return
    log.debug("%s: not a run (no config.json + run.json); looking for runs below it", root)
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        below = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if is_run(Path(dirpath, d)):
                yield Path(dirpath, d)  # a run's own folders (resume/, tb/) hold no runs
            else:
                log.debug("%s: not a run; skipped", Path(dirpath, d))
                below.append(d)
        dirnames[:] = below


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); treated as missing", path, e)
        return None
    return obj if isinstance(obj, dict) else None


def _num(v) -> float | None:
    """A finite number, or None (missing, NaN, or not a number)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_curve(path: Path) -> list[dict] | None:
    """metrics.csv as a list of {column: float}; None when the run has none yet."""
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _ci(v) -> list[float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
        return [float(v[0]), float(v[1])]
    return None


def read_run(run: Path, parent: Path) -> dict | None:
    """One row: name, config, best epoch and its metrics, epochs run, last train_acc, evaluations."""
    config = _read_json(run / "config.json")
    if config is None:
        log.warning("%s: skipped, its config.json is unreadable", run)
        return None
    best = _read_json(run / "best.json") or {}
    best_metrics = best.get("metrics") or {}
    curve = _read_curve(run / "metrics.csv")
    row = {"name": Path(os.path.abspath(run)).relative_to(parent).as_posix(), "path": str(run), "config": config,
           "best_epoch": best.get("epoch"), "epochs": len(curve) if curve is not None else None,
           "valid_acc": _num(best_metrics.get("valid_acc")), "valid_loss": _num(best_metrics.get("valid_loss")),
           "train_acc": _num(curve[-1].get("train_acc")) if curve else None, "curve": curve or []}
    for split in ("valid", "test"):
        ev = _read_json(run / f"metrics_{split}.json") or {}
        prefix = "test" if split == "test" else "eval_valid"  # valid_acc is best.json's, above
        row[f"{prefix}_acc"], row[f"{prefix}_loss"] = _num(ev.get("accuracy")), _num(ev.get("loss"))
        row[f"{split}_acc_ci95"] = _ci(ev.get("accuracy_ci95"))
        row[f"{split}_checkpoint"] = ev.get("checkpoint")
    return row


def differing_keys(configs: list[dict]) -> tuple[list[str], dict]:
    """(the sorted keys whose values differ across CONFIGS, {key: value} of the others)."""
    differ, constant = [], {}
    for k in sorted(set().union(*configs)):
        values = {json.dumps(c[k], sort_keys=True) if k in c else None for c in configs}
        if len(values) > 1:
            differ.append(k)
        else:
            constant[k] = configs[0][k]
    return differ, constant


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    """Best first (accuracies descending, losses ascending), missing values last, ties by name."""
    if by == "run":
        return sorted(rows, key=lambda r: r["name"])
    higher = METRICS[by][0]

    def key(r: dict) -> tuple:
        v = r.get(by)
        return (1, 0.0, r["name"]) if v is None else (0, -v if higher else v, r["name"])

    return sorted(rows, key=key)


# ---------------------------------------------------------------------------------------------
# The table


def _value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)  # as in config.json: true, null, [512, 256]


def _acc(v: float | None) -> str:
    return MISSING if v is None else f"{100 * v:.2f}%"


def _loss(v: float | None) -> str:
    return MISSING if v is None else f"{v:.4f}"


def _from_last(cell: str, checkpoint: str | None) -> str:
    """Marks a number measured on the last checkpoint rather than the best."""
    return cell if cell == MISSING or checkpoint in (None, "best") else f"{cell} ({checkpoint})"


def _interval(ci: list[float] | None) -> str:
    return MISSING if ci is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _metric_cell(r: dict, m: str) -> str:
    cell = (_acc if m.endswith("_acc") else _loss)(r.get(m))
    return _from_last(cell, r.get("test_checkpoint")) if m.startswith("test_") else cell


def _metric_columns(rows: list[dict], m: str) -> list[tuple[str, bool, list[str]]]:
    """The column of metric M, and beside an accuracy its 95 % interval when any run has one."""
    cols = [(m, True, [_metric_cell(r, m) for r in rows])]
    split = m.removesuffix("_acc")
    if m.endswith("_acc") and any(r.get(f"{split}_acc_ci95") for r in rows):
        cols.append((f"{split}_acc_ci95", True, [_from_last(_interval(r[f"{split}_acc_ci95"]),
                                                            r[f"{split}_checkpoint"]) for r in rows]))
    return cols


def _columns(rows: list[dict], keys: list[str], metric: str) -> list[tuple[str, bool, list[str]]]:
    """(header, right-aligned, cells) of each column, in order."""
    cols = [("run", False, [r["name"] for r in rows])]
    cols += [(k, False, [_value(r["config"][k]) if k in r["config"] else MISSING for r in rows]) for k in keys]
    cols += _metric_columns(rows, metric)
    cols.append(("best_epoch", True, [MISSING if r["best_epoch"] is None else str(r["best_epoch"]) for r in rows]))
    cols.append(("epochs", True, [MISSING if r["epochs"] is None else str(r["epochs"]) for r in rows]))
    has_test = any(r["test_acc"] is not None or r["test_loss"] is not None for r in rows)
    for m in METRICS:
        if m != metric and (has_test or not m.startswith("test_")):
            cols += _metric_columns(rows, m)
    return cols


def format_table(rows: list[dict], keys: list[str], metric: str = "valid_acc") -> str:
    """A markdown table, padded so it also reads as plain text: run, KEYS, METRIC first, then the rest."""
    cols = _columns(rows, keys, metric)
    widths = [max(3, len(h), *(len(c) for c in cells)) for h, _, cells in cols]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if right else c.ljust(w)
                                 for c, w, (_, right, _) in zip(cells, widths, cols)) + " |"

    rule = ("-" * (w + 1) + ":" if right else "-" * (w + 2) for w, (_, right, _) in zip(widths, cols))  # ---: right
    sep = "|" + "|".join(rule) + "|"
    return "\n".join([line([h for h, _, _ in cols]), sep,
                      *(line([cells[i] for _, _, cells in cols]) for i in range(len(rows)))])


def _markdown(result: dict) -> str:
    rows, order = result["rows"], result["sort"]
    direction = "" if order == "run" else ", best first"
    constant = ", ".join(f"`{k}={_value(v)}`" for k, v in result["constant"].items()) or MISSING
    legend = "; ".join(f"`{m}`: {what}" for m, (_, what) in METRICS.items())
    return "\n".join([
        "# imgclf compare", "",
        f"{len(rows)} run{'s' * (len(rows) != 1)} under `{result['parent']}`, sorted by `{order}`{direction}; "
        f"missing values show as {MISSING} and sort last.", "",
        "Runs: " + ", ".join(f"`{r['name']}`" for r in rows), "",
        f"Config keys that differ: {', '.join(f'`{k}`' for k in result['differing_keys']) or 'none'}.", "",
        f"Config keys that are the same in every run: {constant}.", "",
        result["table"], "",
        f"{legend}. A number followed by `(last)` was measured on the last checkpoint, not the best.", "",
    ])


# ---------------------------------------------------------------------------------------------
# The plot


def plot_curves(rows: list[dict]) -> bytes | None:
    """A PNG of every run's valid accuracy (left) and valid loss (right) per epoch; None without curves."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in rows if r["curve"]]
    if not rows:
        return None
    fig = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="tight")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for i, r in enumerate(rows):
        # 10 colours, then the same colours dashed, dotted, ...: every run stays distinguishable
        style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[i // 10 % 4], "marker": ".",
                 "markersize": 4}
        epochs = [c.get("epoch") for c in r["curve"]]
        ax_acc.plot(epochs, [_nan(c.get("valid_acc")) for c in r["curve"]], label=r["name"], **style)
        ax_loss.plot(epochs, [_nan(c.get("valid_loss")) for c in r["curve"]], label=r["name"], **style)
        if r["best_epoch"] is not None and r["valid_acc"] is not None:
            ax_acc.plot([r["best_epoch"]], [r["valid_acc"]], "o", color=style["color"], markersize=7)
    for ax, title in ((ax_acc, "valid accuracy (o: best epoch)"), (ax_loss, "valid loss")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize="small", ncol=1 + len(rows) // 12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # no bbox_inches="tight": the size in pixels stays fixed
    return buf.getvalue()


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v  # a gap in the line


# ---------------------------------------------------------------------------------------------
# The entry point


def _write(path: Path, write, data) -> None:
    try:
        write(path, data)
    except OSError as e:
        raise ImgclfError(f"cannot write {path}: {e.strerror or e}; choose another --out") from None


def compare(paths: str | Path | Iterable[str | Path], metric: str = "valid_acc", sort: str | None = None,
            out: str | Path | None = None, write: bool = True) -> dict:
    """Tabulate runs (run directories, or folders searched recursively for them) and plot their curves.

    METRIC is the headline column; rows sort by SORT (default METRIC), best first. With `write`,
    OUT/compare.md and OUT/compare_valid.png are written; OUT defaults to the one folder given, else
    the runs' common parent. Returns rows, differing_keys, constant, table and the written files.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    sort = sort or metric
    if metric not in METRICS or sort not in SORT_KEYS:
        bad, valid = (metric, METRICS) if metric not in METRICS else (sort, SORT_KEYS)
        raise ImgclfError(f"{bad!r} is not a metric to compare; use one of {', '.join(valid)}")
    runs = find_runs(paths)
    if not runs:
        raise ImgclfError(f"no imgclf runs in {', '.join(map(str, paths))} (a run directory holds config.json "
                          "and run.json, as `imgclf train` writes them); pass run directories or a folder of runs")
    parent = Path(os.path.commonpath([os.path.abspath(r.parent) for r in runs]))
    rows = [row for run in runs if (row := read_run(run, parent)) is not None]
    if not rows:
        raise ImgclfError(f"none of the {len(runs)} runs found could be read (see the warnings above)")
    keys, constant = differing_keys([r["config"] for r in rows])
    rows = sort_rows(rows, sort)
    result = {"rows": rows, "differing_keys": keys, "constant": constant, "metric": metric, "sort": sort,
              "parent": str(parent), "table": format_table(rows, keys, metric), "files": {}}
    if write:
        given = paths[0] if len(paths) == 1 and not is_run(Path(paths[0])) else None
        out_dir = Path(out or given or parent)
        md, png = out_dir / TABLE_FILE, out_dir / PLOT_FILE
        _write(md, atomic_write_text, _markdown(result))
        result["files"]["markdown"] = str(md)
        image = plot_curves(rows)
        if image is None:
            log.warning("no run has a metrics.csv yet, so there is no %s", PLOT_FILE)
        else:
            _write(png, atomic_write_bytes, image)
            result["files"]["plot"] = str(png)
        log.info("compared %d run%s; wrote %s", len(rows), "s" * (len(rows) != 1),
                 " and ".join(result["files"].values()))
    return result
