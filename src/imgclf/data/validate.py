"""Check a data directory before training: images decode, labels agree, no duplicates leak.

`validate` reads the manifests, decodes every image once (in worker processes for big sets, as
the cache does) and keeps only a hash of its pixels, its mode and its size, so memory stays
bounded whatever the image sizes.

Two images are duplicates when their *decoded* pixels are identical: the hash covers mode, size,
palette and raw bytes after EXIF orientation. A copy saved with other metadata still counts; a
re-encoded JPEG (other pixels) does not.

- errors (the CLI exits 2): a missing or undecodable image, a label that train or classes.json
  does not know, a missing or empty train/valid split.
- warnings: duplicates within a split; a leak, i.e. a held-out image whose pixels also occur in
  an earlier split (valid vs train, test vs train or valid); train imbalance above
  IMBALANCE_WARN; a class with no images in valid or test; identical images with different labels.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from ..errors import ImgclfError, where
from ..fileio import read_json
from .images import ImageReadError, open_image
from .manifest import SPLITS, class_sort_key, read_label_rows
from .parallel import map_chunks

IMBALANCE_WARN = 3.0  # largest/smallest train class count above this is a warning
CHUNK = 256  # images per worker task, as in cache.py
N_SHOWN = 20  # rows of each listing in the text summary; --json has them all


class ImageInfo(NamedTuple):
    sha256: str | None  # of the decoded pixels; None when the image could not be read
    mode: str | None
    size: tuple[int, int] | None  # (W, H) after EXIF orientation
    error: str | None


def pixel_hash(im: Image.Image) -> str:
    """sha256 of a decoded image: mode, size, palette (if any) and raw pixel bytes."""
    h = hashlib.sha256(f"{im.mode} {im.size[0]}x{im.size[1]}\n".encode())
    if im.mode in ("P", "PA"):  # the same indices with another palette are another image
        h.update(bytes(im.getpalette() or []))
        h.update(repr(im.info.get("transparency")).encode())
    h.update(im.tobytes())
    return h.hexdigest()


def image_info(path: str | Path) -> ImageInfo:
    try:
        im = open_image(path)
    except ImageReadError as e:
        return ImageInfo(None, None, None, str(e))
    return ImageInfo(pixel_hash(im), im.mode, im.size, None)


def _info_chunk(paths: list[str]) -> list[ImageInfo]:
    return [image_info(p) for p in paths]


def hash_images(paths: list, workers: int | None = None, progress: bool = False) -> list[ImageInfo]:
    """ImageInfo of each path, in order; decoded in a spawn pool when `workers` > 1."""
    from .cache import default_workers

    paths = [str(p) for p in paths]
    tasks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    out: list[ImageInfo] = []
    for infos in map_chunks(_info_chunk, tasks, workers or default_workers(len(paths)), len(paths), "validate",
                            progress):
        out.extend(infos)
    return out


# ---------------------------------------------------------------------------------------------
# Manifests and labels


def _read_splits(data_dir: Path, errors: list[dict]) -> dict[str, tuple[Path, list[Path], list[str], list[int]]]:
    """{split: (csv, paths, label names, CSV lines)} of the splits present; a missing train is fatal."""
    out = {}
    for s in SPLITS:
        csv_path = data_dir / f"{s}.csv"
        if not csv_path.exists():
            if s == "train":
                raise ImgclfError(f"{csv_path}: not found; run `imgclf manifest SRC --out {data_dir}` first")
            if s == "valid":
                errors.append({"where": str(csv_path), "message": "not found; run `imgclf manifest` again"})
            continue
        paths, names, lines = read_label_rows(csv_path)
        if not paths:
            errors.append({"where": str(csv_path), "message": f"the {s} split is empty; add rows"})
        out[s] = (csv_path, paths, names, lines)
    return out


def _check_labels(data_dir: Path, splits: dict, errors: list[dict]) -> list[str]:
    """The class list (classes.json, else train's labels); every unknown label is an error."""
    train_csv, _, train_names, _ = splits["train"]
    found = sorted(set(train_names), key=class_sort_key)
    classes, cj = found, data_dir / "classes.json"
    if cj.exists():
        loaded = read_json(cj)
        if isinstance(loaded, list) and all(isinstance(c, str) for c in loaded):
            classes = loaded
            for c in sorted(set(classes) - set(found), key=class_sort_key):
                errors.append({"where": str(train_csv), "message": f"class {c!r} from classes.json has "
                               "no train images; add some or remove it from classes.json"})
        else:
            errors.append({"where": str(cj), "message": "expected a JSON list of class names"})
    known = set(classes)
    for s, (csv_path, _, names, lines) in splits.items():
        for i, n in enumerate(names):
            if n not in known:
                src = "classes.json" if cj.exists() else "train.csv"
                errors.append({"where": where(csv_path, lines[i]),
                               "message": f"label {n!r} is not in {src}; fix the label or delete the row"})
    return list(classes)


# ---------------------------------------------------------------------------------------------
# Duplicates and leaks


def _duplicates(files: list[dict], infos: list[ImageInfo]) -> tuple[list[dict], list[dict]]:
    """Groups of 2+ files with the same pixels, and leaks: each held-out file with earlier copies."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for k, info in enumerate(infos):
        if info.sha256 is not None:
            by_hash[info.sha256].append(k)
    groups, leaks = [], []
    for h, ks in by_hash.items():
        if len(ks) < 2:
            continue
        members = [files[k] for k in ks]
        groups.append({"sha256": h, "splits": sorted({m["split"] for m in members}, key=SPLITS.index),
                       "labels": sorted({m["label"] for m in members}, key=class_sort_key), "files": members})
        for k in ks:
            rank = SPLITS.index(files[k]["split"])
            earlier = [m for m in members if SPLITS.index(m["split"]) < rank]
            if earlier:
                leaks.append((rank, k, {**files[k], "copies": earlier}))
    return groups, [leak for _, _, leak in sorted(leaks, key=lambda t: t[:2])]


def _within_split(groups: list[dict]) -> dict[str, dict]:
    """Per split: groups with 2+ members in it, and the extra copies beyond the first."""
    out = {}
    for g in groups:
        for s, n in Counter(m["split"] for m in g["files"]).items():
            if n > 1:
                d = out.setdefault(s, {"groups": 0, "extra_copies": 0})
                d["groups"] += 1
                d["extra_copies"] += n - 1
    return out


def _imbalance(counts: dict[str, int]) -> dict:
    if not counts:
        return {"ratio": None, "largest": [None, 0], "smallest": [None, 0], "warn_above": IMBALANCE_WARN}
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    ratio = counts[big] / counts[small] if counts[small] else None
    return {"ratio": None if ratio is None else round(ratio, 3), "largest": [big, counts[big]],
            "smallest": [small, counts[small]], "warn_above": IMBALANCE_WARN}


def _warnings(report: dict) -> list[str]:
    out = []
    for s, d in report["within_split"].items():
        out.append(f"{s}: {_n(d['groups'], 'group')} of identical images ({_copies(d['extra_copies'])})")
    for s in SPLITS[1:]:
        leaked = [x for x in report["leaks"] if x["split"] == s]
        if leaked:
            into = Counter(c["split"] for x in leaked for c in x["copies"])
            out.append(f"leak: {_n(len(leaked), s + ' image')} have a copy in "
                       + " or ".join(f"{t} ({n})" for t, n in into.items()))
    conflicts = [g for g in report["duplicates"] if len(g["labels"]) > 1]
    if conflicts:
        out.append(f"{len(conflicts)} groups of identical images have different labels")
    ratio = report["imbalance"]["ratio"]
    if ratio is None or ratio > IMBALANCE_WARN:
        big, small = report["imbalance"]["largest"], report["imbalance"]["smallest"]
        out.append(f"train imbalance: class {big[0]!r} has {big[1]} images, class {small[0]!r} {small[1]}")
    for s, d in report["splits"].items():
        missing = [c for c, n in d["class_counts"].items() if n == 0]
        if s != "train" and missing:
            out.append(f"{s}: no images of class(es) {', '.join(missing)}")
    return out


# ---------------------------------------------------------------------------------------------
# The report


def validate(data_dir: str | Path, workers: int | None = None, progress: bool = False) -> dict:
    """Check every split of `data_dir`; returns the report (JSON-ready). See the module doc."""
    data_dir = Path(data_dir)
    errors: list[dict] = []
    splits = _read_splits(data_dir, errors)
    classes = _check_labels(data_dir, splits, errors)
    files = [{"split": s, "where": where(csv_path, line), "path": str(p), "label": n}
             for s, (csv_path, paths, names, lines) in splits.items()
             for p, n, line in zip(paths, names, lines)]
    infos = hash_images([f["path"] for f in files], workers, progress)
    for f, info in zip(files, infos):
        if info.error:
            errors.append({"where": f["where"], "message": f"{info.error}; replace the file or delete the row"})
    groups, leaks = _duplicates(files, infos)
    split_info = {}
    for s, (csv_path, paths, names, _) in splits.items():
        c = Counter(names)
        split_info[s] = {"csv": str(csv_path), "n_images": len(paths),
                         "class_counts": {k: c.get(k, 0) for k in classes}}
    ok = [i for i in infos if i.error is None]
    report = {
        "data_dir": str(data_dir.resolve()), "classes": classes, "splits": split_info,
        "imbalance": _imbalance(split_info["train"]["class_counts"]),
        "sizes": dict(Counter(f"{i.size[0]}x{i.size[1]}" for i in ok).most_common()),
        "modes": dict(Counter(i.mode for i in ok).most_common()),
        "duplicates": groups, "within_split": _within_split(groups), "leaks": leaks, "errors": errors,
    }
    report["warnings"] = _warnings(report)
    return report


def _table(rows: list[list], right_from: int = 1) -> list[str]:
    """Rows of cells as aligned text; columns from `right_from` on are right-aligned."""
    widths = [max(len(str(r[j])) for r in rows) for j in range(len(rows[0]))]
    return ["  ".join(str(c).rjust(w) if j >= right_from else str(c).ljust(w)
                      for j, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def _counts(d: dict) -> str:
    shown = [f"{k} {v}" for k, v in list(d.items())[:10]]
    return ", ".join(shown) + (f", and {len(d) - 10} more" if len(d) > 10 else "") if d else "none"


def _short(f: dict) -> tuple[str, str]:
    """("test.csv line 5", "img.jpg"): where a file is listed, and its name."""
    return Path(f["where"]).name, Path(f["path"]).name


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _copies(n: int) -> str:
    return f"{n} extra {'copy' if n == 1 else 'copies'}"


def format_report(report: dict) -> str:
    """The report as a plain-text summary with aligned columns."""
    splits = report["splits"]
    n_all = sum(d["n_images"] for d in splits.values())
    lines = [f"imgclf validate {report['data_dir']}: {n_all} images, {len(splits)} splits, "
             f"{len(report['classes'])} classes", ""]
    rows = [["class", *splits]] + [[c, *(d["class_counts"][c] for d in splits.values())] for c in report["classes"]]
    lines += _table(rows + [["total", *(d["n_images"] for d in splits.values())]])
    imb = report["imbalance"]
    ratio = "inf" if imb["ratio"] is None else f"{imb['ratio']:.2f}"
    lines += ["", f"train imbalance: largest/smallest class = {imb['largest'][1]}/{imb['smallest'][1]} = "
              f"{ratio} (warn above {imb['warn_above']:g})",
              f"image sizes: {_counts(report['sizes'])}", f"image modes: {_counts(report['modes'])}", ""]
    groups, within = report["duplicates"], report["within_split"]
    lines.append(f"identical images (same decoded pixels): {_n(len(groups), 'group')}, "
                 + _copies(sum(len(g["files"]) - 1 for g in groups)))
    rows = [[f"  within {s}", _n(d["groups"], "group")] for s, d in within.items()]
    rows.append(["  across splits", _n(sum(len(g["splits"]) > 1 for g in groups), "group")])
    lines += _table(rows) if groups else []
    lines.append("")
    lines += _format_leaks(report["leaks"])
    for title, items in (("errors", [f"{e['where']}: {e['message']}" for e in report["errors"]]),
                         ("warnings", report["warnings"])):
        lines.append(f"{title}: {len(items)}")
        lines += [f"  {x}" for x in items[:N_SHOWN]]
        if len(items) > N_SHOWN:
            lines.append(f"  ... and {len(items) - N_SHOWN} more (--json lists all)")
    return "\n".join(lines)


def _format_leaks(leaks: list[dict]) -> list[str]:
    if not leaks:
        return ["leaks: none (no valid or test image also occurs in an earlier split)", ""]
    per_split = Counter(x["split"] for x in leaks)
    lines = ["leaks (held-out images that also occur in an earlier split): "
             + ", ".join(_n(n, f"{s} image") for s, n in per_split.items())]
    rows, more = [], []
    for s, n in per_split.items():
        rows += [[f"  {s}", *_short(x), "=", "; ".join(" ".join((c["split"], *_short(c))) for c in x["copies"])]
                 for x in leaks if x["split"] == s][:N_SHOWN]
        if n > N_SHOWN:
            more.append(f"  ... and {n - N_SHOWN} more {s} leaks (--json lists all)")
    return lines + _table(rows, right_from=99) + more + [""]
