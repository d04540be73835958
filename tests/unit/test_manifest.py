import csv
import json

import numpy as np
import pytest

from imgclf.data.manifest import (label_from_filename, load_data, load_split, make_manifests, read_label_csv,
                                  scan, stratified_split)
from imgclf.errors import ImgclfError
from conftest import make_image_folder


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_labels_from_filename(image_folder):
    paths, labels = scan(image_folder, "filename")
    assert len(paths) == 36
    assert sorted(set(labels)) == ["a", "b", "c"]
    assert all(p.name.startswith(lab + "_") for p, lab in zip(paths, labels))


def test_labels_from_pattern(tmp_path):
    from pathlib import Path
    import re

    assert label_from_filename(Path("img-cat-01.png"), re.compile(r"img-(\w+?)-")) == "cat"
    assert label_from_filename(Path("0_IMG_5957 (1).jpg"), None) == "0"
    with pytest.raises(ImgclfError, match="cannot read a label"):
        label_from_filename(Path("nolabel.png"), None)


def test_labels_from_folder(tmp_path):
    root = make_image_folder(tmp_path / "imgs", n_per_class=3, layout="folder")
    paths, labels = scan(root, "auto")  # no images at the top → folders
    assert sorted(set(labels)) == ["a", "b", "c"]
    assert all(p.parent.name == lab for p, lab in zip(paths, labels))


def test_labels_from_csv_case_insensitive_header(tmp_path, image_folder):
    src = tmp_path / "labels.csv"
    files = sorted(image_folder.glob("*.png"))
    src.write_text("Path,Label\n" + "".join(f"images/{p.name},{p.name[0]}\n" for p in files), encoding="utf-8")
    paths, labels = scan(src, "auto")
    assert [p.name for p in paths] == [p.name for p in files]
    assert labels[0] == "a" and paths[0].is_absolute() and paths[0].exists()


def test_stratified_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(4), [50, 30, 20, 10])
    a = stratified_split(labels, [0.8, 0.1, 0.1], seed=3)
    b = stratified_split(labels, [0.8, 0.1, 0.1], seed=3)
    c = stratified_split(labels, [0.8, 0.1, 0.1], seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert sorted(np.concatenate(a).tolist()) == list(range(len(labels)))  # a partition
    for part, frac in zip(a, [0.8, 0.1, 0.1]):
        counts = np.bincount(labels[part], minlength=4)
        assert np.all(np.abs(counts - frac * np.array([50, 30, 20, 10])) <= 1)


def test_small_classes_still_reach_every_split():
    labels = np.repeat(np.arange(2), [40, 3])
    tr, va, te = stratified_split(labels, [0.8, 0.1, 0.1], seed=0)
    for part in (tr, va, te):
        assert 1 in labels[part]


def test_make_manifests_with_separate_test_folder(tmp_path):
    train_src = make_image_folder(tmp_path / "train", n_per_class=10)
    test_src = make_image_folder(tmp_path / "test", n_per_class=2, seed=1)
    summary = make_manifests(train_src, tmp_path / "d", test_src=test_src, seed=230)
    assert (summary["train"], summary["valid"], summary["test"]) == (24, 6, 6)
    test_rows = _rows(tmp_path / "d" / "test.csv")
    assert all("test" in r["path"] for r in test_rows)
    assert json.loads((tmp_path / "d" / "classes.json").read_text()) == ["a", "b", "c"]


def test_awkward_file_names_round_trip(tmp_path):
    from PIL import Image

    names = ["0_IMG_5957 (1).jpg", "0_a,b.png", "1_ñandú 日本.png", '1_quote".png', "0_x.PNG", "1_y.JpEg"]
    src = tmp_path / "src dir"
    src.mkdir()
    for n in names:
        Image.new("RGB", (4, 4)).save(src / n, format="PNG" if "png" in n.lower() else "JPEG")
    make_manifests(src, tmp_path / "out", split="1,0,0")
    m = load_split(tmp_path / "out", "train")
    from pathlib import Path

    assert sorted(Path(p).name for p in m.paths) == sorted(names)
    assert all(Path(p).exists() for p in m.paths)


def test_relative_paths_resolve_against_the_csv_folder(data_dir, tmp_path):
    rows = _rows(data_dir / "train.csv")
    assert not rows[0]["path"].startswith("/")
    paths, _ = read_label_csv(data_dir / "train.csv")
    assert all(p.exists() for p in paths)


def test_class_order_is_natural(tmp_path):
    root = make_image_folder(tmp_path / "i", n_per_class=3, classes=("10", "9", "2"))
    summary = make_manifests(root, tmp_path / "d")
    assert summary["classes"] == ["2", "9", "10"]
    data = load_data(tmp_path / "d", ("train", "valid", "test"))
    assert data["valid"].classes == ("2", "9", "10")


def test_a_split_left_without_some_class_is_warned_about(tmp_path, caplog):
    import logging

    make_image_folder(tmp_path / "few", n_per_class=2)  # 2 per class cannot fill train, valid and test
    with caplog.at_level(logging.WARNING, logger="imgclf"):
        make_manifests(tmp_path / "few", tmp_path / "d", labels="filename")
    assert "valid.csv: no images of classes a, b, c" in caplog.text and "test.csv" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgclf"):  # no test set asked for: nothing to warn about
        make_manifests(tmp_path / "few", tmp_path / "d2", labels="filename", split="0.5,0.5,0")
    assert "no images of" not in caplog.text
