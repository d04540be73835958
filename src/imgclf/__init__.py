"""imgclf: from a folder of labelled images to a trained classifier and a test-set number you can trust.

The public API (the CLI calls exactly these):
    make_manifests(src, out, ...)   scan images, split, write train/valid/test CSVs + classes.json
    validate(data_dir)              corrupt files, duplicates, train/test leaks, class balance
    build_cache(data_dir, ...)      decode + resize once into a packed uint8 cache
    fit(data_dir, run_dir, ...)     fit a model, writing a run directory
    evaluate(run_dir, split, ...)   every metric of a checkpoint on a split (best checkpoint by default)
    write_report(run_dir)           RUN/report.html
    compare(paths)                  a table of runs
    lr_find(data_dir, config)       the learning-rate range test
    predict(run_dir, inputs)        class probabilities for new images
    export(run_dir, format)         a standalone ONNX or TorchScript model
    run_study(kind, data_dir, ...)  controlled init / regularisation studies
    search(data_dir, space, ...)    Optuna hyperparameter search
    Config                          the typed training configuration
Attributes load lazily, so `import imgclf.data.images` (e.g. in a cache worker) does not import torch.
"""
from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "make_manifests": "imgclf.data.manifest",
    "load_data": "imgclf.data.manifest",
    "build_cache": "imgclf.data.cache",
    "validate": "imgclf.data.validate",
    "Config": "imgclf.config",
    "load_config": "imgclf.config",
    "fit": "imgclf.train.fit",
    "evaluate": "imgclf.evaluation.metrics",
    "write_report": "imgclf.evaluation.report",
    "compare": "imgclf.evaluation.compare",
    "lr_find": "imgclf.train.lr_find",
    "predict": "imgclf.evaluation.predict",
    "search": "imgclf.studies.search",
    "run_study": "imgclf.studies.study",
    "export": "imgclf.evaluation.export",
    "load_checkpoint": "imgclf.train.checkpoint",
    "create_model": "imgclf.models",
    "init_weights": "imgclf.models.init",
    "run_demo": "imgclf.demo",
    "ImgclfError": "imgclf.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")
