"""Manifests: find images, read their labels, split them, and read/write `path,label` CSVs.

A data directory holds `train.csv`, `valid.csv`, `test.csv` and `classes.json`. The CSVs are the
source of truth: users re-split, drop or merge classes by editing them. Relative paths in a CSV
resolve against the CSV's own folder.
"""
from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImgclfError, where
from ..fileio import atomic_write_json, atomic_write_text, ensure_dir_target, read_json

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLITS = ("train", "valid", "test")
LABEL_SOURCES = ("auto", "filename", "folder", "csv")


@dataclass(frozen=True)
class Manifest:
    """One split. Arrays, not per-sample objects: `paths` is a fixed-width numpy string array."""

    csv_path: Path
    paths: np.ndarray  # (N,) str, absolute
    labels: np.ndarray  # (N,) int64 class index
    classes: tuple[str, ...]
    lines: np.ndarray  # (N,) int32: the CSV line each row starts on (the header is line 1)

    def __len__(self) -> int:
        return len(self.labels)

    def line_of(self, i: int) -> int:
        return int(self.lines[i])

    def where(self, i: int) -> str:
        return where(self.csv_path, self.line_of(i))


def class_sort_key(name: str) -> tuple:
    """Natural order, so that class '10' comes after '9'."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


# ---------------------------------------------------------------------------------------------
# Finding images and their labels


def find_images(root: Path) -> list[Path]:
    """Every image below `root`, any extension case, sorted for determinism."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def label_from_filename(path: Path, pattern: re.Pattern | None) -> str:
    """The part of the file name before the first `_`, or the first group of `pattern`."""
    name = path.name
    if pattern is not None:
        m = pattern.search(name)
        if m is None or not m.groups() or not m.group(1):
            raise ImgclfError(
                f"{path}: --pattern {pattern.pattern!r} does not match this file name with a "
                "non-empty first group; fix the pattern or move the file out of the source folder"
            )
        return m.group(1)
    stem = path.stem
    if "_" not in stem or not stem.split("_", 1)[0]:
        raise ImgclfError(
            f"{path}: cannot read a label from the file name (expected LABEL_rest, e.g. "
            "'0_image1.png'); rename it, use --pattern REGEX, or use --labels folder|csv"
        )
    return stem.split("_", 1)[0]


def read_label_csv(csv_path: Path) -> tuple[list[Path], list[str]]:
    """(paths, labels) of a `path,label` CSV; see read_label_rows."""
    paths, labels, _ = read_label_rows(csv_path)
    return paths, labels


def read_label_rows(csv_path: Path) -> tuple[list[Path], list[str], list[int]]:
    """Rows of a `path,label` CSV (header case-insensitive), paths resolved against its folder.

    Also returns the line each row starts on, so errors point at the right line even when the
    file has blank lines or quoted fields that span lines.
    """
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImgclfError(f"{csv_path}: file not found; check the path") from None
    except UnicodeDecodeError as e:
        raise ImgclfError(f"{csv_path}: not UTF-8 text ({e}); save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    cols = [h.strip().lower() for h in header] if header else []
    if "path" not in cols or "label" not in cols:
        raise ImgclfError(
            f"{where(csv_path, 1)}: the header must have 'path' and 'label' columns, found "
            f"{header!r}; add a header line 'path,label'"
        )
    i_path, i_label = cols.index("path"), cols.index("label")
    paths, labels, lines = [], [], []
    end = reader.line_num
    for row in reader:
        line, end = end + 1, reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(i_path, i_label):
            raise ImgclfError(f"{where(csv_path, line)}: expected {len(cols)} columns, got {len(row)}; fix the row")
        p, label = row[i_path].strip(), row[i_label].strip()
        if not p or not label:
            raise ImgclfError(f"{where(csv_path, line)}: empty path or label; fill it in or delete the row")
        paths.append((csv_path.parent / p).resolve() if not Path(p).is_absolute() else Path(p))
        labels.append(label)
        lines.append(line)
    return paths, labels, lines


def detect_label_source(src: Path) -> str:
    if src.is_file() and src.suffix.lower() == ".csv":
        return "csv"
    if not src.is_dir():
        raise ImgclfError(f"{src}: not a folder or a .csv file; point SRC at your images")
    top_images = [p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS]
    return "filename" if top_images else "folder"


def scan(src: Path, labels: str = "auto", pattern: str | None = None) -> tuple[list[Path], list[str]]:
    """The images under `src` (a folder, or a CSV for labels='csv') and their label names."""
    if labels not in LABEL_SOURCES:
        raise ImgclfError(f"--labels {labels!r} is not one of {', '.join(LABEL_SOURCES)}")
    rx = compile_pattern(pattern) if pattern else None  # a bad pattern is an error whatever --labels is
    if labels == "auto":
        labels = detect_label_source(src)
        log.info("labels: reading them from the %s (--labels to choose)", labels)
    if labels == "csv":
        return read_label_csv(src)
    if not src.is_dir():
        raise ImgclfError(f"{src}: not a folder; point SRC at the folder that holds your images")
    files = find_images(src)
    if not files:
        raise ImgclfError(f"{src}: no images found ({', '.join(IMAGE_EXTS)}); check the folder")
    if labels == "folder":
        return files, [p.parent.name for p in files]
    return files, [label_from_filename(p, rx) for p in files]


def compile_pattern(pattern: str) -> re.Pattern:
    """--pattern as a regex with a group for the label, checked before any file is read."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ImgclfError(f"--pattern {pattern!r}: not a valid regular expression ({e}); fix it, "
                          r"e.g. --pattern '^([a-z]+)_\d+' (quote it for the shell)") from None
    if rx.groups < 1:
        raise ImgclfError(f"--pattern {pattern!r} has no (group) for the label; put the label part in "
                          r"parentheses, e.g. --pattern '^([a-z]+)_\d+'")
    return rx


# ---------------------------------------------------------------------------------------------
# Splitting


def parse_fractions(text: str, n_parts: int) -> list[float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise ImgclfError(f"--split {text!r}: expected numbers like 0.8,0.1,0.1") from None
    if len(parts) == 3 and n_parts == 2:
        log.warning("--test is set, so the test fraction in --split %s is ignored", text)
        parts = parts[:2]
    if len(parts) != n_parts or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ImgclfError(f"--split {text!r}: expected {n_parts} non-negative fractions, e.g. "
                          + ("0.8,0.2" if n_parts == 2 else "0.8,0.1,0.1"))
    total = sum(parts)
    return [p / total for p in parts]


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices per class by `fractions`; deterministic for a seed; sorted within each part.

    Every class with at least as many samples as there are non-empty parts gets at least one
    sample in each such part, so small classes still appear in valid and test.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        counts = [int(round(f * n)) for f in fractions[1:]]
        if n >= len([f for f in fractions if f > 0]):
            counts = [max(k, 1) if f > 0 else 0 for k, f in zip(counts, fractions[1:])]
        counts = [min(k, n - 1) for k in counts]  # train keeps at least one
        while sum(counts) > n - 1:
            counts[counts.index(max(counts))] -= 1
        start = n - sum(counts)
        parts[0].append(idx[:start])
        for j, k in enumerate(counts, start=1):
            parts[j].append(idx[start:start + k])
            start += k
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


# ---------------------------------------------------------------------------------------------
# Writing and reading a data directory


def write_csv(path: Path, paths: list[Path], labels: list[str]) -> None:
    """Write `path,label` rows, paths relative to the CSV's folder; csv quoting keeps commas safe."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label"])
    base = path.parent.resolve()
    for p, label in zip(paths, labels):
        w.writerow([Path(_relpath(Path(p).resolve(), base)).as_posix(), label])
    atomic_write_text(path, buf.getvalue())


def _relpath(p: Path, base: Path) -> str:
    import os

    try:
        return os.path.relpath(p, base)
    except ValueError:  # another drive on Windows
        return str(p)


def _dedupe(paths: list[Path], names: list[str], what: str | Path,
            drop: set[str] | frozenset[str] = frozenset()) -> tuple[list[Path], list[str], set[str]]:
    """Keep one image of each group with identical decoded pixels, none of a group whose labels
    disagree, and none whose pixel hash is in `drop`. Also returns the set of every hash seen."""
    from .validate import hash_images  # validate imports this module

    infos = hash_images(paths)
    bad = next((i.error for i in infos if i.error), None)
    if bad:
        raise ImgclfError(f"{bad}; --dedupe must decode every image: replace or remove the file")
    groups: dict[str, list[int]] = {}
    for k, info in enumerate(infos):
        groups.setdefault(info.sha256, []).append(k)
    keep, n_copies, n_conflict, n_leak = [], 0, 0, 0
    for h, ks in groups.items():
        if h in drop:
            n_leak += len(ks)
        elif len({names[k] for k in ks}) > 1:
            n_conflict += len(ks)
            log.warning("dedupe: label conflict, identical images with different labels; dropped all of them: %s",
                        ", ".join(f"{paths[k]} ({names[k]})" for k in ks))
        else:
            keep.append(min(ks, key=lambda k: (len(str(paths[k])), k)))  # 'x.jpg' rather than 'x (1).jpg'
            n_copies += len(ks) - 1
    leak = f", {n_leak} whose pixels also occur in the training source (a leak)" if drop else ""
    log.info("dedupe %s: kept %d of %d images; dropped %d duplicate copies, %d with conflicting labels%s",
             what, len(keep), len(paths), n_copies, n_conflict, leak)
    keep.sort()
    return [paths[k] for k in keep], [names[k] for k in keep], set(groups)


def make_manifests(src: str | Path, out: str | Path, labels: str = "auto", pattern: str | None = None,
                   split: str | None = None, test_src: str | Path | None = None, seed: int = 230,
                   dedupe: bool = False) -> dict:
    """Scan `src`, split it stratified by class, and write train/valid/test CSVs + classes.json.

    With `test_src`, that folder is the test set and only `src` is split into train/valid.
    With `dedupe`, identical images (same decoded pixels) are kept once, before the split, and
    test images whose pixels occur anywhere in `src` are dropped: no image is in two splits.
    Returns a summary: the number of images per split and the classes.
    """
    src, out = Path(src), Path(out)
    ensure_dir_target(out, "--out")
    paths, names = scan(src, labels, pattern)
    if dedupe:
        paths, names, src_hashes = _dedupe(paths, names, src)
    classes = sorted(set(names), key=class_sort_key)
    if len(classes) < 2:
        raise ImgclfError(f"{src}: found only the class {classes}; a classifier needs at least two classes")
    y = np.array([classes.index(n) for n in names])
    splits: dict[str, tuple[list[Path], list[str]]] = {}
    if test_src is not None:
        fr = parse_fractions(split or "0.8,0.2", 2)
        tr, va = stratified_split(y, fr, seed)
        t_paths, t_names = scan(Path(test_src), labels, pattern)
        if dedupe:
            t_paths, t_names, _ = _dedupe(t_paths, t_names, test_src, drop=src_hashes)
        unknown = sorted(set(t_names) - set(classes), key=class_sort_key)
        if unknown:
            raise ImgclfError(f"{test_src}: test labels {unknown} do not occur in {src}; "
                              "add training images for them or remove them from the test folder")
        splits["test"] = (t_paths, t_names)
    else:
        fr = parse_fractions(split or "0.8,0.1,0.1", 3)
        tr, va, te = stratified_split(y, fr, seed)
        splits["test"] = ([paths[i] for i in te], [names[i] for i in te])
    splits["train"] = ([paths[i] for i in tr], [names[i] for i in tr])
    splits["valid"] = ([paths[i] for i in va], [names[i] for i in va])
    out.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_csv(out / f"{s}.csv", *splits[s])
    atomic_write_json(out / "classes.json", classes)
    summary = {"classes": classes, **{s: len(splits[s][0]) for s in SPLITS}}
    log.info("wrote %s: train %d, valid %d, test %d images, %d classes", out,
             summary["train"], summary["valid"], summary["test"], len(classes))
    for s, f in (("valid", fr[1]), ("test", None if test_src else fr[2])):
        missing = sorted(set(classes) - set(splits[s][1]), key=class_sort_key)
        if missing and f:  # a given test folder, or a zero fraction, is the user's choice
            log.warning("%s: no images of %s %s, too few to split off; add images or change --split",
                        out / f"{s}.csv", "class" if len(missing) == 1 else "classes", ", ".join(missing))
    return summary


def load_classes(data_dir: Path, train_names: list[str], train_csv: Path, lines: list[int]) -> tuple[str, ...]:
    """The class list: classes.json when present (it must agree with train.csv), else train's labels."""
    found = sorted(set(train_names), key=class_sort_key)
    cj = data_dir / "classes.json"
    if not cj.exists():
        return tuple(found)
    classes = read_json(cj, 'fix it (a JSON list of class names, e.g. ["cat", "dog"]), delete it (the '
                            "classes then come from train.csv), or re-run `imgclf manifest`")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ImgclfError(f"{cj}: expected a JSON list of class names, e.g. [\"cat\", \"dog\"]")
    empty = [c for c in classes if c not in set(found)]
    if empty:
        raise ImgclfError(f"{train_csv}: class {empty[0]!r} from classes.json has no images; add images "
                          "for it or remove it from classes.json (the CSVs are the source of truth)")
    extra = [c for c in found if c not in set(classes)]
    if extra:
        line = lines[train_names.index(extra[0])]
        raise ImgclfError(f"{where(train_csv, line)}: label {extra[0]!r} is not in {cj}; "
                          "add it there or fix the row")
    return tuple(classes)


def load_split(data_dir: str | Path, split: str, classes: tuple[str, ...] | None = None) -> Manifest:
    """Read DIR/<split>.csv. Without `classes` (train), the classes come from load_classes."""
    data_dir = Path(data_dir)
    csv_path = data_dir / f"{split}.csv"
    if not csv_path.exists():
        raise ImgclfError(f"{csv_path}: not found; run `imgclf manifest SRC --out {data_dir}` first")
    paths, names, lines = read_label_rows(csv_path)
    if not paths:
        raise ImgclfError(f"{csv_path}: the {split} split is empty; add rows or re-run `imgclf manifest`")
    if classes is None:
        classes = load_classes(data_dir, names, csv_path, lines)
    index = {c: i for i, c in enumerate(classes)}
    for i, n in enumerate(names):
        if n not in index:
            raise ImgclfError(f"{where(csv_path, lines[i])}: label {n!r} does not occur in train.csv; "
                              "fix the label, add training images for it, or delete the row")
    return Manifest(csv_path, np.array([str(p) for p in paths]), np.array([index[n] for n in names], np.int64),
                    tuple(classes), np.array(lines, np.int32))


def load_data(data_dir: str | Path, splits: tuple[str, ...] = ("train", "valid")) -> dict[str, Manifest]:
    """Read and cross-check the requested splits; the class list always comes from train."""
    train = load_split(data_dir, "train")
    out = {"train": train}
    for s in splits:
        if s != "train":
            out[s] = load_split(data_dir, s, train.classes)
    return out


def check_files_exist(m: Manifest) -> None:
    for i, p in enumerate(m.paths):
        if not Path(p).is_file():
            raise ImgclfError(f"{m.where(i)}: image {p} is missing; restore it or delete the row")
