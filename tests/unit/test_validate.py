"""`validate` and `manifest --dedupe` on tiny generated images with planted duplicates and leaks."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.cli import main
from imgclf.data import validate as validate_mod
from imgclf.data.images import open_image
from imgclf.data.manifest import SPLITS, make_manifests, read_label_csv, write_csv
from imgclf.data.validate import format_report, hash_images, pixel_hash, validate
from imgclf.fileio import atomic_write_json


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)  # (H, W, C)


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _data_dir(root: Path, rows: dict[str, list[tuple[str, int | bytes, str]]]) -> Path:
    """rows: {split: [(file name, pixel seed or raw bytes, label)]}; images go in root/img."""
    for split, items in rows.items():
        paths = []
        for name, content, _ in items:
            p = root / "img" / name
            if isinstance(content, bytes):
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(content)
            else:
                _save(p, _pixels(content))
            paths.append(p)
        write_csv(root / f"{split}.csv", paths, [label for _, _, label in items])
    atomic_write_json(root / "classes.json", ["a", "b"])
    return root


def _clean_rows():
    """Distinct images: 4 per class in train, 1 per class in valid and test."""
    return {"train": [(f"tr{i}.png", i, "ab"[i % 2]) for i in range(8)],
            "valid": [("va0.png", 100, "a"), ("va1.png", 101, "b")],
            "test": [("te0.png", 200, "a"), ("te1.png", 201, "b")]}


def test_clean_data_has_no_findings(tmp_path):
    r = validate(_data_dir(tmp_path, _clean_rows()))
    assert r["errors"] == [] and r["warnings"] == [] and r["duplicates"] == [] and r["leaks"] == []
    assert {s: d["class_counts"] for s, d in r["splits"].items()} == {
        "train": {"a": 4, "b": 4}, "valid": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    assert r["sizes"] == {"8x8": 12} and r["modes"] == {"RGB": 12}
    assert r["imbalance"]["ratio"] == 1.0
    json.dumps(r)  # the whole report is JSON-ready


def test_pixel_hash_sees_pixels_not_bytes(tmp_path):
    png = _save(tmp_path / "x.png", _pixels(1))
    bmp = _save(tmp_path / "x.bmp", _pixels(1))  # other file format, same pixels
    changed = _pixels(1)
    changed[0, 0, 0] ^= 1
    other = _save(tmp_path / "y.png", changed)
    assert png.read_bytes() != bmp.read_bytes()
    assert pixel_hash(open_image(png)) == pixel_hash(open_image(bmp)) != pixel_hash(open_image(other))
    grey = Image.fromarray(_pixels(1)[:, :, 0])
    assert pixel_hash(grey) != pixel_hash(grey.convert("P"))  # same bytes, other mode


def test_within_split_duplicates(tmp_path):
    rows = _clean_rows()
    rows["train"] += [("tr0_copy.png", 0, "a"), ("tr2_copy.png", 2, "a")]
    rows["valid"] += [("va0_copy.png", 100, "a")]
    r = validate(_data_dir(tmp_path, rows))
    assert r["errors"] == [] and r["leaks"] == []
    pairs = {tuple(sorted(Path(f["path"]).name for f in g["files"])) for g in r["duplicates"]}
    assert pairs == {("tr0.png", "tr0_copy.png"), ("tr2.png", "tr2_copy.png"), ("va0.png", "va0_copy.png")}
    assert r["within_split"] == {"train": {"groups": 2, "extra_copies": 2}, "valid": {"groups": 1, "extra_copies": 1}}
    assert len(r["warnings"]) == 2


def test_leaks_name_both_sides(tmp_path):
    rows = _clean_rows()
    rows["test"] += [("te_from_train.png", 3, "b"), ("te_from_valid.png", 101, "b")]
    rows["valid"] += [("va_from_train.png", 5, "b")]
    data = _data_dir(tmp_path, rows)
    r = validate(data)
    assert r["errors"] == []
    got = [(x["split"], Path(x["path"]).name, [(c["split"], Path(c["path"]).name) for c in x["copies"]])
           for x in r["leaks"]]
    assert got == [("valid", "va_from_train.png", [("train", "tr5.png")]),
                   ("test", "te_from_train.png", [("train", "tr3.png")]),
                   ("test", "te_from_valid.png", [("valid", "va1.png")])]
    assert r["leaks"][1]["where"] == f"{data / 'test.csv'} line 4"
    assert r["leaks"][1]["copies"][0]["where"] == f"{data / 'train.csv'} line 5"
    assert "leak: 2 test images have a copy in train (1) or valid (1)" in r["warnings"]
    text = format_report(r)
    assert "te_from_train.png" in text and "tr3.png" in text and "errors: 0" in text


def test_corrupt_and_missing_images_are_errors_with_their_line(tmp_path):
    rows = _clean_rows()
    rows["valid"].insert(1, ("broken.png", b"this is not an image", "a"))
    data = _data_dir(tmp_path, rows)
    (data / "img" / "te1.png").unlink()
    r = validate(data)
    assert [e["where"] for e in r["errors"]] == [f"{data / 'valid.csv'} line 3", f"{data / 'test.csv'} line 3"]
    assert "cannot read image" in r["errors"][0]["message"] and "missing" in r["errors"][1]["message"]
    assert r["sizes"] == {"8x8": 11}  # 13 rows, the two bad files not counted


def test_label_problems_are_errors(tmp_path):
    rows = _clean_rows()
    rows["test"].append(("te2.png", 202, "zebra"))
    data = _data_dir(tmp_path, rows)
    r = validate(data)
    assert [e["where"] for e in r["errors"]] == [f"{data / 'test.csv'} line 4"]
    assert "'zebra'" in r["errors"][0]["message"]
    atomic_write_json(data / "classes.json", ["a", "b", "c"])
    assert any("'c' from classes.json has no train images" in e["message"] for e in validate(data)["errors"])


def test_imbalance_and_missing_class_warnings(tmp_path):
    rows = _clean_rows()
    rows["train"] = [(f"tr{i}.png", i, "a") for i in range(7)] + [("trb0.png", 50, "b"), ("trb1.png", 51, "b")]
    rows["test"] = [("te0.png", 200, "a")]
    r = validate(_data_dir(tmp_path, rows))
    assert r["imbalance"]["ratio"] == 3.5 and r["imbalance"]["largest"] == ["a", 7]
    assert any(w.startswith("train imbalance") for w in r["warnings"])
    assert "test: no images of class(es) b" in r["warnings"]


def test_worker_pool_gives_the_same_answer(tmp_path, monkeypatch):
    paths = [_save(tmp_path / f"{i}.png", _pixels(i % 7)) for i in range(12)]
    paths.append(tmp_path / "gone.png")
    monkeypatch.setattr(validate_mod, "CHUNK", 4)  # 4 tasks, so the pool is really used
    assert hash_images(paths, workers=2) == hash_images(paths, workers=1)


def test_cli_exit_status_and_json(tmp_path, capsys):
    rows = _clean_rows()
    rows["test"].append(("te_from_train.png", 3, "b"))
    warn_only = _data_dir(tmp_path / "warn", rows)
    assert main(["validate", "--data", str(warn_only)]) == 0
    out = capsys.readouterr().out
    assert "leaks (held-out images" in out and "te_from_train.png" in out and "warnings: 1" in out
    assert main(["validate", "--data", str(warn_only), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leaks"][0]["split"] == "test"
    rows["train"][2] = ("corrupt.png", b"\x89PNG but truncated", "a")
    bad = _data_dir(tmp_path / "bad", rows)
    assert main(["validate", "--data", str(bad)]) == 2
    assert f"{bad / 'train.csv'} line 4: cannot read image" in capsys.readouterr().out


def _hashes(data: Path) -> dict[str, list[str]]:
    out = {}
    for s in SPLITS:
        paths, _ = read_label_csv(data / f"{s}.csv")
        out[s] = [i.sha256 for i in hash_images(paths, workers=1)]
    return out


@pytest.fixture
def dup_source(tmp_path):
    """src: 6 distinct images per class, 3 of them twice, and a label conflict; test: one leak."""
    src, test = tmp_path / "src", tmp_path / "test"
    for c, base in (("a", 0), ("b", 100)):
        for i in range(6):
            _save(src / f"{c}_{i}.png", _pixels(base + i))
        for i in range(3):
            _save(src / f"{c}_{i} (1).png", _pixels(base + i))
    _save(src / "a_conflict.png", _pixels(999))
    _save(src / "b_conflict.png", _pixels(999))
    _save(test / "a_leak.png", _pixels(4))
    _save(test / "a_t0.png", _pixels(500))
    _save(test / "a_t0 (1).png", _pixels(500))
    _save(test / "b_t1.png", _pixels(501))
    return src, test


def test_without_dedupe_the_planted_duplicates_are_there(dup_source, tmp_path):
    src, test = dup_source
    make_manifests(src, tmp_path / "raw", labels="filename", test_src=test, seed=3)
    r = validate(tmp_path / "raw")
    # 3 pairs per class, the conflict pair, the pair in test, and a_leak.png = a_4.png
    assert len(r["duplicates"]) == 9
    assert [Path(x["path"]).name for x in r["leaks"] if x["split"] == "test"] == ["a_leak.png"]


def test_dedupe_drops_duplicates_leaks_and_conflicts(dup_source, tmp_path, caplog, monkeypatch):
    src, test = dup_source
    monkeypatch.setattr(logging.getLogger("imgclf"), "propagate", True)  # the CLI may have turned it off
    caplog.set_level(logging.INFO, logger="imgclf")
    out = tmp_path / "dedup"
    summary = make_manifests(src, out, labels="filename", test_src=test, seed=3, dedupe=True)
    assert (summary["train"] + summary["valid"], summary["test"]) == (12, 2)  # 6 a + 6 b; t0 and t1
    hashes = _hashes(out)
    every = [h for s in SPLITS for h in hashes[s]]
    assert len(every) == len(set(every)) == 14  # each image once, so nothing of train in valid/test
    names = {Path(p).name for s in SPLITS for p in read_label_csv(out / f"{s}.csv")[0]}
    assert not names & {"a_conflict.png", "b_conflict.png", "a_leak.png"}
    assert "a_0.png" in names and "a_0 (1).png" not in names  # the shorter name of a pair is kept
    assert "label conflict" in caplog.text and "a_conflict.png" in caplog.text
    assert "1 whose pixels also occur in the training source" in caplog.text
    again = make_manifests(src, tmp_path / "again", labels="filename", test_src=test, seed=3, dedupe=True)
    assert again == summary
    assert all((out / f"{s}.csv").read_text() == (tmp_path / "again" / f"{s}.csv").read_text() for s in SPLITS)
    r = validate(out)
    assert r["duplicates"] == [] and r["errors"] == []


def test_dedupe_three_way_split_and_cli_flag(dup_source, tmp_path):
    src, _ = dup_source
    out = tmp_path / "d3"
    assert main(["manifest", str(src), "--out", str(out), "--labels", "filename", "--split", "0.5,0.25,0.25",
                 "--dedupe"]) == 0
    every = [h for hs in _hashes(out).values() for h in hs]
    assert len(every) == len(set(every)) == 12
    r = validate(out)
    assert all(min(d["class_counts"].values()) >= 1 for d in r["splits"].values())  # still stratified
