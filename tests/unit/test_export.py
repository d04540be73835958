"""`imgclf export`: standalone ONNX and TorchScript models that take decoded uint8 images and give
the same probabilities as `imgclf predict`."""
import json
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, make_image_folder
from imgclf.cli import main
from imgclf.data.images import decode
from imgclf.data.manifest import make_manifests
from imgclf.errors import ImgclfError
from imgclf.evaluation.export import export, sidecar_path
from imgclf.evaluation.predict import load_classifier

SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    images = make_image_folder(root / "images")
    make_manifests(images, root / "data", labels="filename", split="0.6,0.2,0.2", seed=1)
    assert main(["-q", "train", "--no-report", "--data", str(root / "data"), "--run", str(root / "run"), *SETS]) == 0
    return images, root / "run"


def _batch(images, meta, n):
    """(n, H, W, C) uint8: what the exported model's users feed it (decode + resize, no normalisation)."""
    inp = meta["input"]
    return np.stack([decode(p, inp["size"], inp["channels"], inp["resize"]) for p in sorted(images.glob("*.png"))[:n]])


def _check_parity(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    assert (got.argmax(1) == want.argmax(1)).all()
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)


def _check_sidecar(path, fmt, meta):
    side = json.loads(sidecar_path(path).read_text())
    assert side["model_format"] == fmt and side["classes"] == meta["classes"]
    assert side["input"]["name"] == "image" and side["input"]["dtype"] == "uint8" and side["input"]["layout"] == "NHWC"
    assert side["input"]["shape"][1:] == [meta["input"]["size"], meta["input"]["size"], meta["input"]["channels"]]
    assert side["input"]["resize"] == meta["input"]["resize"]
    assert side["output"]["name"] == "probabilities" and side["normalization"] == meta["normalization"]


def test_onnx_parity(trained, capsys):
    ort = pytest.importorskip("onnxruntime")  # a guard only: the test extra installs it
    images, run = trained
    assert main(["-q", "export", "--run", str(run), "--format", "onnx"]) == 0
    path = run / "model.onnx"
    assert f"wrote {path}" in capsys.readouterr().out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name, out.type) == ("image", "tensor(uint8)", "probabilities", "tensor(float)")
    classifier, meta = load_classifier(run)
    for n in (1, 7):  # the export traced a batch of 2: the batch dimension is dynamic
        x = _batch(images, meta, n)
        with torch.no_grad():
            want = classifier(torch.from_numpy(x)).numpy()
        _check_parity(session.run(["probabilities"], {"image": x})[0], want)
    _check_sidecar(path, "onnx", meta)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_parity(trained, tmp_path):
    images, run = trained
    path = export(run, "torchscript", tmp_path / "m.pt", checkpoint="last")
    assert path == tmp_path / "m.pt" and sidecar_path(path) == tmp_path / "m.pt.json"
    loaded = torch.jit.load(str(path))
    classifier, meta = load_classifier(run, "last")
    for n in (1, 7):
        x = _batch(images, meta, n)
        with torch.no_grad():
            want = classifier(torch.from_numpy(x)).numpy()
            _check_parity(loaded(torch.from_numpy(x)).numpy(), want)
    _check_sidecar(path, "torchscript", meta)
    assert json.loads(sidecar_path(path).read_text())["source"]["checkpoint"] == "last"


def test_missing_onnx_names_the_extra(trained, monkeypatch, capsys):
    _, run = trained
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed: `import onnx` raises ImportError
    with pytest.raises(ImgclfError, match=r"pip install 'imgclf\[onnx\]'"):
        export(run, "onnx", run / "never.onnx")
    assert not (run / "never.onnx").exists()
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "imgclf: error: ONNX export needs the onnx package: pip install 'imgclf[onnx]'"
