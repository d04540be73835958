"""`imgclf predict`: files, folders and CSVs in; one row per readable image out; skips never abort."""
import csv
import io
import json
import shutil

import pytest
import torch

from conftest import TINY, make_image_folder
from imgclf.cli import main
from imgclf.data.loader import BatchLoader, FileSource
from imgclf.data.manifest import load_data, make_manifests
from imgclf.evaluation.metrics import predict_logits
from imgclf.evaluation.predict import predict
from imgclf.train.checkpoint import load_checkpoint

SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
TOP3 = ["path", "label", "probability", "label_1", "probability_1", "label_2", "probability_2", "label_3",
        "probability_3"]


def train_tiny(root):
    images = make_image_folder(root / "images")
    make_manifests(images, root / "data", labels="filename", split="0.6,0.2,0.2", seed=1)
    assert main(["-q", "train", "--no-report", "--data", str(root / "data"), "--run", str(root / "run"), *SETS]) == 0
    return images, root / "data", root / "run"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("predict"))


def _cli_csv(capsys, argv):
    code = main(["-q", "predict", *argv])
    out, err = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(out))), err


def _check_row(row, k=3):
    probs = [float(row[f"probability_{j}"]) for j in range(1, k + 1)]
    assert row["label"] == row["label_1"] and float(row["probability"]) == probs[0]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-5


def test_files(trained, capsys):
    images, _, run = trained
    files = [str(images / "a_0000.png"), str(images / "c_0003.png")]
    code, rows, err = _cli_csv(capsys, ["--run", str(run), *files])
    assert code == 0 and "skipped" not in err
    assert [r["path"] for r in rows] == files
    assert list(rows[0]) == TOP3
    for r in rows:
        _check_row(r)
        assert {r["label_1"], r["label_2"], r["label_3"]} == {"a", "b", "c"}  # k = all 3 classes
        assert float(r["probability_1"]) + float(r["probability_2"]) + float(r["probability_3"]) == \
            pytest.approx(1, abs=1e-5)


def test_folder_json_top_k_capped_and_out_file(trained, capsys, tmp_path):
    images, _, run = trained
    assert main(["-q", "predict", "--run", str(run), str(images), "--json", "--top-k", "10"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in got["predictions"]] == [str(p) for p in sorted(images.glob("*.png"))]
    assert got["skipped"] == [] and list(got["predictions"][0]) == TOP3  # --top-k 10 capped at 3 classes
    out = tmp_path / "sub" / "preds.csv"
    assert main(["-q", "predict", "--run", str(run), str(images), "--top-k", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 36 and list(rows[0]) == ["path", "label", "probability", "label_1", "probability_1"]
    assert [r["label"] for r in rows] == [p["label"] for p in got["predictions"]]


def test_csv_with_unreadable_and_missing_rows(trained, capsys, tmp_path):
    images, _, run = trained
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"these bytes are not an image")
    shutil.copy(images / "b_0001.png", tmp_path / "b, copy.png")
    listing = tmp_path / "list.csv"
    listing.write_text(f'Path,Label\n"b, copy.png",b\nbad.png,a\nmissing.png,c\n{images / "a_0002.png"},a\n')
    code, rows, err = _cli_csv(capsys, ["--run", str(run), str(listing), str(tmp_path / "nope.jpg")])
    assert code == 0
    assert [r["path"] for r in rows] == [str(tmp_path / "b, copy.png"), str(images / "a_0002.png")]
    assert list(rows[0]) == [*TOP3, "true_label"] and [r["true_label"] for r in rows] == ["b", "a"]
    for r in rows:
        _check_row(r)
    skips = [line for line in err.splitlines() if line.startswith("imgclf: skipped ")]
    assert len(skips) == 3
    assert skips[0].startswith(f"imgclf: skipped {bad}: cannot read image")
    assert skips[1] == f"imgclf: skipped {tmp_path / 'missing.png'}: no such file"
    assert skips[2] == f"imgclf: skipped {tmp_path / 'nope.jpg'}: no such file"
    assert "Traceback" not in err


def test_nothing_predicted_is_exit_2(trained, capsys, tmp_path):
    _, _, run = trained
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    code, rows, err = _cli_csv(capsys, ["--run", str(run), str(tmp_path / "bad.jpg"), str(tmp_path / "gone.png")])
    assert code == 2 and rows == []
    lines = err.strip().splitlines()
    assert sum(line.startswith("imgclf: skipped ") for line in lines) == 2
    assert lines[-1].startswith("imgclf: error: no image could be predicted")
    assert main(["predict", "--run", str(tmp_path / "no-run"), str(tmp_path)]) == 2


def test_same_predictions_as_evaluation(trained):
    """Same decode + normalisation as training: predict's probabilities are the softmax of the
    logits that evaluate computes for the same images."""
    _, data, run = trained
    rows, skipped = predict(run, [data / "train.csv", data / "test.csv"], top_k=3)
    assert skipped == []
    model, meta = load_checkpoint(run, "best")
    norm = meta["normalization"]
    expected = []
    for split in ("train", "test"):
        manifest = load_data(data, (split,))[split]
        source = FileSource(manifest, meta["input"]["size"], meta["input"]["channels"], meta["input"]["resize"])
        logits, labels = predict_logits(model, BatchLoader(source, 5, shuffle=False), norm["mean"], norm["std"],
                                        torch.device("cpu"))
        expected.append((manifest, torch.softmax(logits, dim=1), labels))
    paths = [str(p) for m, _, _ in expected for p in m.paths]
    probs = torch.cat([p for _, p, _ in expected])
    labels = torch.cat([y for _, _, y in expected])
    classes = meta["classes"]
    assert [r["path"] for r in rows] == paths
    assert [r["label"] for r in rows] == [classes[i] for i in probs.argmax(1).tolist()]
    assert [r["true_label"] for r in rows] == [classes[i] for i in labels.tolist()]
    got = torch.tensor([[r[f"probability_{j}"] for j in (1, 2, 3)] for r in rows])
    assert torch.allclose(got, probs.sort(dim=1, descending=True).values, atol=1e-6)


def test_needs_only_the_run_directory(tmp_path, capsys):
    images, data, run = train_tiny(tmp_path)
    keep = tmp_path / "new"
    keep.mkdir()
    for name in ("a_0001.png", "b_0002.png", "c_0004.png"):
        shutil.copy(images / name, keep / name)
    shutil.rmtree(data)
    shutil.rmtree(images)
    capsys.readouterr()
    code, rows, err = _cli_csv(capsys, ["--run", str(run), str(keep), "--checkpoint", "last"])
    assert code == 0 and len(rows) == 3 and "skipped" not in err
