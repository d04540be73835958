"""Export a run's checkpoint as a standalone model (ONNX or TorchScript) with its preprocessing inside.

The contract, the same for both formats:
- input `image`: uint8, (B, H, W, C), B dynamic, H = W = the checkpoint's input size, C its channels
  (3 = RGB, 1 = grey); i.e. `imgclf.data.images.decode(path, size, channels, resize)` stacked. The
  normalisation ((x/255 − mean)/std with the train set's mean/std) happens inside the graph.
- output `probabilities`: float32, (B, K), the softmax over the classes, in the order of the
  sidecar's `classes`.
A JSON sidecar `<file>.json` beside the model holds the classes, the input size, channels, resize
policy, mean/std (for reference: already applied inside), and where the model came from.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`), which needs only the `onnx` package;
the torch.export-based one would also need onnxscript. The graph is checked with onnx.checker.
"""
from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path

import torch

from .. import __version__
from ..errors import ImgclfError
from ..fileio import atomic_write_bytes, atomic_write_json
from .predict import Classifier, load_classifier

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # format → default file name in RUN
ONNX_OPSET = 17  # onnxruntime ≥ 1.12 runs it; nothing in these models needs a newer op
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Write RUN/<checkpoint> as a standalone model in `fmt` (onnx|torchscript) to `out` (default
    RUN/model.onnx or RUN/model.torchscript.pt) plus its sidecar `<out>.json`; returns `out`."""
    if fmt not in FORMATS:
        raise ImgclfError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch's exporter needs it; check before the slow part)
        except ImportError:
            raise ImgclfError("ONNX export needs the onnx package: pip install 'imgclf[onnx]'") from None
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / FORMATS[fmt]
    classifier, meta = load_classifier(run_dir, checkpoint, "cpu")
    inp = meta["input"]
    example = torch.zeros((2, inp["size"], inp["size"], inp["channels"]), dtype=torch.uint8)  # (B, H, W, C)
    blob = _onnx_bytes(classifier, example) if fmt == "onnx" else _torchscript_bytes(classifier, example)
    atomic_write_bytes(out, blob)
    atomic_write_json(sidecar_path(out), _sidecar(meta, fmt, checkpoint, run_dir, blob))
    log.info("exported %s of %s as %s to %s (+ %s)", checkpoint, run_dir, fmt, out, sidecar_path(out).name)
    return out


def sidecar_path(model_path: str | Path) -> Path:
    """`model.onnx` → `model.onnx.json`: the full name plus .json, so two formats never share one."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def _onnx_bytes(classifier: Classifier, example: torch.Tensor) -> bytes:
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(classifier, (example,), buf, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    blob = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(blob))
    return blob


def _torchscript_bytes(classifier: Classifier, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit for torch.export
        traced = torch.jit.trace(classifier, (example,))  # conv/linear/flatten graphs: any batch size
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _sidecar(meta: dict, fmt: str, checkpoint: str, run_dir: Path, blob: bytes) -> dict:
    inp, classes = meta["input"], meta["classes"]
    return {
        "format": "imgclf-export", "format_version": 1, "imgclf": __version__,
        "model_format": fmt, **({"onnx_opset": ONNX_OPSET} if fmt == "onnx" else {}),
        "classes": classes,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC",
                  "shape": ["batch", inp["size"], inp["size"], inp["channels"]],
                  "size": inp["size"], "channels": inp["channels"], "resize": inp["resize"],
                  "normalized_inside": True},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(classes)],
                   "meaning": "softmax probabilities, in the order of `classes`"},
        "normalization": meta["normalization"],
        "source": {"run_dir": str(run_dir.resolve()), "checkpoint": checkpoint, "epoch": meta.get("epoch"),
                   "model": meta["model"], "weights_sha256": meta.get("weights_sha256")},
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
