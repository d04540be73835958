"""`fit`: train on train, select on valid, keep the last and the best checkpoint, resume exactly.

It checks and sets up the run directory (config.json, run.json, train.log) and hands over to
`Trainer` (trainer.py), which owns every piece of state that an exact resume needs.
"""
from __future__ import annotations

import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from .. import __version__, dist
from ..config import Config, load_config
from ..data.pipeline import Prepared, prepare
from ..errors import ImgclfError
from ..fileio import atomic_write_bytes, atomic_write_json, ensure_dir_target, read_json
from .checkpoint import has_resume, load_resume
from .monitor import TensorBoard
from .trainer import Trainer, resolve_device

log = logging.getLogger("imgclf.train")

RESUME_MAY_CHANGE = ("checkpoint_every",)  # keys that do not change the result
# Kept across --overwrite, so that evaluating the retrained run's test set warns of test reuse.
TEST_HISTORY = "test_evaluations.json"


def _check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Whether RUN holds an earlier run that --overwrite will replace; refuses anything else."""
    ensure_dir_target(run_dir, "--run")
    if not (run_dir.exists() and any(run_dir.iterdir())):
        return False
    if not overwrite:
        raise ImgclfError(f"{run_dir}: already holds a run; pass --overwrite to replace it, --resume to "
                          "continue it, or choose another --run (the existing run was left untouched)")
    if not (run_dir / "config.json").exists():
        raise ImgclfError(f"{run_dir}: is not an imgclf run (no config.json), so --overwrite will not "
                          "delete it; choose another --run")
    return True


def _log_to_file(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.INFO)
    root = logging.getLogger("imgclf")
    root.addHandler(h)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return h


def _run_info(data_dir: Path, data: Prepared, cfg: Config, device: torch.device) -> dict:
    return {"data_dir": str(data_dir.resolve()), "cache": str(data.cache.path) if data.cache else None,
            "classes": list(data.classes), "mean": data.mean, "std": data.std,
            "counts": {s: len(src) for s, src in data.sources.items()}, "device": str(device),
            "imgclf": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": cfg.seed}


def _resume_setup(run_dir: Path, config: Config | None, data_dir: Path | None) -> tuple[Config, Path]:
    if not (run_dir / "config.json").exists() or not (run_dir / "run.json").exists():
        raise ImgclfError(f"{run_dir}: not an imgclf run (no config.json/run.json); nothing to resume")
    cfg = load_config(base=read_json(run_dir / "config.json"))
    if config is not None:
        diff = sorted(k for k in Config.model_fields if getattr(config, k) != getattr(cfg, k)
                      and k not in RESUME_MAY_CHANGE)
        if diff:
            raise ImgclfError(f"--resume continues {run_dir} with its own config; these keys differ: "
                              f"{', '.join(diff)}. Drop them from --config/--set, or start a new run")
        cfg = cfg.model_copy(update={k: getattr(config, k) for k in RESUME_MAY_CHANGE})
    return cfg, Path(data_dir or read_json(run_dir / "run.json")["data_dir"])


def fit(data_dir: str | Path | None, run_dir: str | Path, config: Config | None = None, overwrite: bool = False,
        progress: bool = False, resume: bool = False, report: bool = True,
        on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Fit a model on DATA/train.csv, select on valid.csv, and write the run directory.

    With `resume`, continue RUN from its newest resume point (DATA defaults to the run's), with
    the same result, bit for bit on the CPU, as if it had never stopped. With `report`, end by
    evaluating the best checkpoint on every split and writing RUN/report.html. `on_epoch_end` is
    called with each epoch's metrics row after its checkpoints are saved; an exception it raises
    (an Optuna pruner's TrialPruned, say) stops the run there. Returns a summary.
    """
    run_dir = Path(run_dir)
    if resume:
        cfg, data_dir = _resume_setup(run_dir, config, Path(data_dir) if data_dir else None)
        replace = False
    else:
        if data_dir is None:
            raise ImgclfError("--data is required (except with --resume)")
        cfg, data_dir, replace = config or Config(), Path(data_dir), _check_run_dir(run_dir, overwrite)
    device = resolve_device(cfg.device)
    data = prepare(data_dir, ("train", "valid"), cfg.image_size, cfg.channels, cfg.resize, cfg.cache, progress)
    cfg = cfg.resolved()
    if dist.is_main():
        test_history = None
        if replace:  # only now that the data has loaded: a bad input must not cost the old run
            log.warning("--overwrite: replacing the run in %s", run_dir)
            old = run_dir / TEST_HISTORY
            test_history = old.read_bytes() if old.is_file() else None
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if test_history is not None:  # the test set was seen: retraining doesn't unsee it
            atomic_write_bytes(run_dir / TEST_HISTORY, test_history)
        handler = _log_to_file(run_dir)
        if not resume:
            atomic_write_json(run_dir / "config.json", cfg.model_dump())
            atomic_write_json(run_dir / "run.json", _run_info(data_dir, data, cfg, device))
    try:
        trainer = Trainer(cfg, data, run_dir, device, progress, on_epoch_end)
        if resume:
            _restore(trainer, run_dir, data)
        log.info("training %s on %d images (%d classes), validating on %d, %d epochs, device %s, %s%s",
                 cfg.model, len(data.sources["train"]), len(data.classes), len(data.sources["valid"]),
                 cfg.num_epochs, device, str(trainer.prec.dtype or "fp32").removeprefix("torch."),
                 ", channels_last" if trainer.to_dev.channels_last else "")
        trainer.tensorboard = TensorBoard(run_dir, enabled=dist.is_main())
        try:
            summary = trainer.train()
        finally:
            trainer.tensorboard.close()
            trainer.writer.close()
        if report and dist.is_main():
            from ..evaluation.report import write_report

            summary["report"] = str(write_report(run_dir, data_dir))
        return summary
    finally:
        if dist.is_main():
            logging.getLogger("imgclf").removeHandler(handler)
            handler.close()


def _restore(trainer: Trainer, run_dir: Path, data: Prepared) -> None:
    if not has_resume(run_dir):  # stopped before its first save: the start is the newest state
        log.warning("%s: no state was saved yet; training from the beginning with the run's config", run_dir)
        return
    expected = read_json(run_dir / "last.json").get("manifest_sha256") if (run_dir / "last.json").exists() else None
    if expected and data.cache and expected != data.cache.meta["parts"]["manifests"]:
        raise ImgclfError(f"{run_dir}: the manifests changed since this run started, so a resume would not "
                          "be exact; restore them or start a new run")
    weights, state = load_resume(run_dir)
    trainer.load_state_dict(weights, state)
    log.info("resuming %s at epoch %d, batch %d", run_dir, trainer.pos.epoch, trainer.pos.batch)
