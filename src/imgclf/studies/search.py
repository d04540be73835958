"""Hyperparameter search with Optuna: one normal run directory per trial, a resumable study.

A search space maps config keys to distributions (a YAML file or a dict). Every trial trains
`fit(DATA, OUT/trial-NNNN, config)` with the config of the defaults < `--set` < the sampled
values, reports its valid accuracy after each epoch to a median pruner, and scores the best valid
accuracy of the run. The study lives in an Optuna storage (default `sqlite:///OUT/study.db`), so
running the same search again continues it, and several processes or machines sharing a storage
work on one study at once.
"""
from __future__ import annotations

import concurrent.futures
import inspect
import json
import logging
import math
import multiprocessing
import os
import socket
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from ..config import Config, load_config
from ..errors import ImgclfError
from ..fileio import pid_alive, read_json
from ..train.fit import fit
from ..train.trainer import TrainingDiverged, TrainingInterrupted
from .space import grid_of, load_space, suggest  # noqa: F401  (load_space, grid_of: public here too)

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials counts
HEARTBEAT_S, GRACE_S = 10, 60  # a running trial's worker writes a heartbeat every 10 s; 60 s without → dead
SQLITE_TIMEOUT_S = 60  # how long a writer waits for SQLite's lock before failing (several workers)
CLAIMED = (*FINISHED, TrialState.RUNNING)  # trials that count towards --trials, done or being done


# ---------------------------------------------------------------------------------------------
# Storage, dead trials, samplers


def _retry_once(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A dead trial's parameters are tried again, once, as a new trial (with its own number and run dir)."""
    if "retry_of" not in trial.user_attrs and trial.params:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def open_storage(url: str, retry: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a trial whose worker died is marked failed after GRACE_S."""
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    new_name = "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
    callback = {("heartbeat_stale_trial_callback" if new_name else "failed_trial_callback"):
                _retry_once if retry else None}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S, **callback)
        except Exception as e:  # sqlalchemy's ArgumentError, OperationalError, a missing driver...
            raise ImgclfError(f"--storage {url}: cannot open ({type(e).__name__}: {e}); give a database URL "
                              "such as sqlite:///study.db or postgresql://user@host/db") from None


def _fail_dead_local_trials(study: optuna.Study, retry: bool) -> None:
    """On restart, a RUNNING trial of a process of this machine that no longer exists is failed at
    once (the heartbeat rule would do so only after GRACE_S), and its parameters retried."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or pid_alive(pid):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        log.warning("trial %d was left running by process %d, which is gone (killed?): marked failed%s; "
                    "its run directory %s is kept", t.number, pid, ", its parameters retried" if retry else "",
                    t.user_attrs.get("run_dir"))
        if retry:
            _retry_once(study, t)


def _sampler(kind: str, space: dict[str, BaseDistribution], seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":  # constant_liar: parallel workers do not all sample next to the same point
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.GridSampler(grid_of(space), seed=seed)


# ---------------------------------------------------------------------------------------------
# A worker: one process running trials


@dataclass(frozen=True)
class _Job:
    """What a worker process needs (picklable: spawned processes get a copy)."""

    data_dir: str
    out: str
    space: dict
    fixed: dict
    sampler: str
    storage: str
    study_name: str
    n_trials: int  # the target count of finished trials
    n_to_run: int  # at most this many trials in this worker
    seed: int
    jobs: int
    log_level: int
    progress: bool


def _worker(job: _Job, index: int, spawned: bool) -> None:
    if spawned:
        root = logging.getLogger("imgclf")
        if not root.handlers:  # the parent's console level, each line marked with the worker
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(f"[worker {index}] %(message)s"))
            handler.setLevel(job.log_level)
            root.addHandler(handler)
            root.setLevel(min(job.log_level, logging.INFO))
            root.propagate = False
        _quiet_optuna(job.log_level)
    if job.jobs > 1:  # K processes share the cores instead of each starting one thread per core
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.jobs))
    study = optuna.load_study(study_name=job.study_name, storage=open_storage(job.storage, job.sampler != "grid"),
                              sampler=_sampler(job.sampler, job.space, job.seed + index),
                              pruner=optuna.pruners.MedianPruner())
    # Stop once the finished trials and those other workers are running reach the target, so no worker
    # starts a trial the others already cover (a trial that then fails leaves its worker going on).
    stop = optuna.study.MaxTrialsCallback(job.n_trials, states=CLAIMED)
    # A diverged trial (NaN loss at those hyperparameters) is a failed trial, not a failed search.
    study.optimize(lambda trial: _objective(trial, job), n_trials=job.n_to_run, callbacks=[stop],
                   gc_after_trial=False, catch=(TrainingDiverged,))


def _objective(trial: optuna.Trial, job: _Job) -> float:
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    cfg = load_config(overrides={**job.fixed, **suggest(trial, job.space)})
    name = f"trial-{trial.number:04d}"
    run_dir = Path(job.out) / name
    ours = trial.user_attrs.get("run_dir") == name  # an earlier attempt of this very trial number
    if run_dir.exists() and any(run_dir.iterdir()) and not ours:
        raise ImgclfError(f"{run_dir}: already holds a run that trial {trial.number} of study "
                          f"{job.study_name!r} did not write (another study, or an older study.db); "
                          "move it away or choose another --out")
    trial.set_user_attr("run_dir", name)
    log.info("trial %d: %s", trial.number, json.dumps(trial.params))
    summary = fit(job.data_dir, run_dir, cfg, overwrite=ours, progress=job.progress and job.jobs == 1,
                  report=False, on_epoch_end=pruning_callback(trial))
    return float(summary["best_valid_acc"])


def pruning_callback(trial: optuna.Trial):
    """fit's on_epoch_end: report the epoch's valid accuracy; stop the run when the pruner says so."""

    def on_epoch_end(row: dict) -> None:
        trial.report(row["valid_acc"], row["epoch"])
        if trial.should_prune():
            log.info("trial %d: pruned after epoch %d (valid_acc %.4f below the median)", trial.number,
                     row["epoch"], row["valid_acc"])
            raise optuna.TrialPruned()

    return on_epoch_end


def _console_level() -> int:
    """The level that reaches the console (the CLI's -q/-v), which spawned workers copy."""
    root = logging.getLogger("imgclf")
    levels = [h.level or root.getEffectiveLevel() for h in root.handlers if not isinstance(h, logging.FileHandler)]
    return min(levels, default=root.getEffectiveLevel())


def _quiet_optuna(level: int) -> None:
    """Optuna's INFO lines only with -v; and no traceback on its "trial failed" line for our own errors."""
    optuna.logging.set_verbosity(optuna.logging.INFO if level <= logging.DEBUG else optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        if _no_user_error_traceback not in handler.filters:
            handler.addFilter(_no_user_error_traceback)


def _no_user_error_traceback(record: logging.LogRecord) -> bool:
    if record.exc_info and isinstance(record.exc_info[1], ImgclfError):
        record.exc_info = None  # the error's own message is on the line, and the search raises it again
    return True


# ---------------------------------------------------------------------------------------------
# The entry point


def search(data_dir: str | Path, space: str | Path | dict, n_trials: int, out: str | Path, sampler: str = "tpe",
           storage: str | None = None, study_name: str | None = None, jobs: int = 1,
           overrides: dict[str, Any] | None = None, seed: int = 230, progress: bool = False) -> dict:
    """Run (or continue) a search until the study has N_TRIALS finished (complete or pruned) trials.

    Each trial is the run OUT/trial-NNNN. JOBS worker processes share the study; a worker starts
    another trial only while fewer than N_TRIALS are finished or running, so a parallel search ends
    with N_TRIALS finished trials, or up to JOBS - 1 more when workers ask for their next trial at
    the same moment. Ends by writing OUT/compare.md and OUT/compare_valid.png. Returns the counts, the best trial (number, value, run_dir, config) and
    the compare files.
    """
    if sampler not in SAMPLERS:
        raise ImgclfError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if n_trials < 1 or jobs < 1:
        raise ImgclfError(f"--trials ({n_trials}) and --jobs ({jobs}) must be at least 1")
    fixed = dict(overrides or {})
    base = load_config(overrides=fixed)  # a bad --set fails here, before any trial
    dists = load_space(space, fixed)
    if sampler == "grid":
        n_grid = math.prod(len(v) for v in grid_of(dists, "search space" if isinstance(space, dict) else
                                                   str(space)).values())
        if n_trials > n_grid:
            log.warning("the grid has %d points; the search stops at %d trials, not %d", n_grid, n_grid, n_trials)
            n_trials = n_grid
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out.resolve() / 'study.db'}"
    study_name = study_name or out.resolve().name
    level = _console_level()
    _quiet_optuna(level)
    study = optuna.create_study(storage=open_storage(storage, sampler != "grid"), study_name=study_name,
                                direction="maximize", load_if_exists=True)
    _check_resume(study, dists, fixed)
    _fail_dead_local_trials(study, retry=sampler != "grid")
    n_done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if n_done >= n_trials:
        log.info("study %r already has %d finished trials (target %d); nothing to run", study_name, n_done, n_trials)
    else:
        log.info("study %r: %d of %d trials finished; running the rest with %d worker%s (storage %s)", study_name,
                 n_done, n_trials, jobs, "s" * (jobs > 1), storage)
        # a continued study gets new sampler seeds, else its random start would repeat the first run's
        seed += 1000 * len(study.get_trials(deepcopy=False))
        job = _Job(str(data_dir), str(out), dists, fixed, sampler, storage, study_name, n_trials,
                   n_trials - n_done, seed, jobs, level, progress)
        try:
            _run_workers(job, base)
        except TrainingInterrupted:  # Ctrl-C: the trial is failed; its run directory is kept
            raise TrainingInterrupted(f"search interrupted; its trials so far are in {storage}. Continue with "
                                      "the same command") from None
    return summarize(study, out, n_trials)


def _check_resume(study: optuna.Study, dists: dict[str, BaseDistribution], fixed: dict) -> None:
    """A continued study must search each key with the same kind of distribution, and should fix the same keys."""
    for t in study.get_trials(deepcopy=False):
        for key, old in t.distributions.items():
            if key in dists:
                try:
                    optuna.distributions.check_distribution_compatibility(old, dists[key])
                except ValueError as e:
                    raise ImgclfError(f"search space: {key}: differs from the study's earlier trials ({e}); "
                                      "keep it, or start a new study with another --out or --study") from None
    before = study.user_attrs.get("fixed")
    if before is None:
        study.set_user_attr("fixed", fixed)
    elif before != json.loads(json.dumps(fixed)):
        log.warning("continuing study %r with --set %s; its earlier trials used %s", study.study_name,
                    json.dumps(fixed), json.dumps(before))


def _run_workers(job: _Job, base: Config) -> None:
    if job.jobs == 1:
        _worker(job, 0, spawned=False)
        return
    if base.cache:  # build the shared image cache once, not K times at once
        from ..data.cache import build_cache

        build_cache(job.data_dir, base.image_size, base.channels, base.resize)
    # spawn, not fork: torch and SQLAlchemy hold threads and connections that a fork would copy broken
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(job.jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_worker, job, i, True) for i in range(job.jobs)]
        errors = []
        for f in concurrent.futures.as_completed(futures):
            try:
                f.result()
            except concurrent.futures.process.BrokenProcessPool:
                errors.append(ImgclfError("a worker process died (killed?); run the same command again to "
                                          "continue the study"))
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other workers finish
                errors.append(e)
    if errors:
        raise errors[0]


def summarize(study: optuna.Study, out: Path, n_trials: int) -> dict:
    """Counts by state, the best complete trial with its run's config, and the compare table of OUT."""
    from ..evaluation.compare import compare

    trials = study.get_trials(deepcopy=False)
    counts = dict(Counter(t.state.name.lower() for t in trials))
    result = {"study": study.study_name, "out": str(out), "target": n_trials, "counts": counts,
              "finished": sum(t.state in FINISHED for t in trials), "best": None, "compare": {}}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        run_dir = out / best.user_attrs.get("run_dir", f"trial-{best.number:04d}")
        result["best"] = {"number": best.number, "value": best.value, "params": best.params, "run_dir": str(run_dir),
                          "config": read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else None}
    if trials:
        try:
            result["compare"] = compare(out)["files"]
        except ImgclfError as e:  # e.g. every trial failed before its run started
            log.warning("no compare table: %s", e)
    return result


def format_result(result: dict) -> str:
    """The lines the CLI prints: counts, the best trial, its full config, where the table is."""
    counts = ", ".join(f"{n} {state}" for state, n in result["counts"].items()) or "no trials"
    lines = [f"study {result['study']!r} in {result['out']}: {result['finished']} of {result['target']} "
             f"trials finished ({counts})"]
    best = result["best"]
    if best is None:
        lines.append("no trial completed, so there is no best trial yet")
    else:
        lines += [f"best trial {best['number']}: valid_acc {best['value']:.4f} ({json.dumps(best['params'])}), "
                  f"run {best['run_dir']}", "config:", json.dumps(best["config"], indent=2)]
    if result["compare"].get("markdown"):
        lines.append(f"compare table: {result['compare']['markdown']}")
    return "\n".join(lines)
