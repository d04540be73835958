"""The command line: parse arguments, set up logging, call the library, map errors to exit codes."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__
from .errors import ImgclfError

log = logging.getLogger("imgclf")

# -q/-v work before or after the subcommand; SUPPRESS keeps a subcommand from resetting them.
_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                     help="no progress bars; only warnings, errors and results")
_COMMON.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not a count of processes; give 1 or more")
    return n


def _add_manifest(sub) -> None:
    p = sub.add_parser("manifest", help="find images, read labels, write train/valid/test CSVs", parents=[_COMMON])
    p.add_argument("src", help="folder of images, or a CSV with path,label columns")
    p.add_argument("--out", required=True, help="data directory to write the manifests into")
    p.add_argument("--labels", default="auto", choices=["auto", "filename", "folder", "csv"],
                   help="where labels live (default: auto-detect)")
    p.add_argument("--pattern", help="regex whose first group is the label, matched on the file name")
    p.add_argument("--split", help="fractions train,valid,test (default 0.8,0.1,0.1; with --test: train,valid 0.8,0.2)")
    p.add_argument("--test", dest="test_src", help="a separate folder used as the test set as it is")
    p.add_argument("--seed", type=int, default=230, help="seed of the stratified split (default 230)")
    p.add_argument("--dedupe", action="store_true",
                   help="drop identical images (same pixels), and test images that also occur in SRC (default off)")


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="decode + resize every image once into a cache", parents=[_COMMON])
    p.add_argument("--data", required=True, help="data directory with the manifests")
    p.add_argument("--size", type=int, default=64, help="side in pixels (default 64)")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="3 = RGB, 1 = grey (default 3)")
    p.add_argument("--resize", default="squash", choices=["squash", "center-crop", "pad"], help="default squash")
    p.add_argument("--format", default="packed", choices=["packed", "npz"], help="default packed")
    p.add_argument("--workers", type=_positive_int, help="decoding processes, ≥ 1 (default: auto)")


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a data directory: unreadable images, labels, duplicates, leaks",
                       parents=[_COMMON])
    p.add_argument("--data", required=True, help="data directory with the manifests")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON instead of a summary")
    p.add_argument("--workers", type=_positive_int, help="decoding processes, ≥ 1 (default: auto)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model; writes a run directory", parents=[_COMMON])
    p.add_argument("--data", help="data directory with the manifests (with --resume: default the run's)")
    p.add_argument("--run", required=True, help="run directory to create (or, with --resume, to continue)")
    p.add_argument("--config", help="JSON file of config keys (CS230's params.json works)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--no-cache", action="store_true", help="decode images every epoch instead of caching")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue RUN from its newest saved state, exactly")
    p.add_argument("--no-report", action="store_true", help="skip RUN/report.html (and its evaluations) at the end")
    p.add_argument("--track-stats", type=int, metavar="N",
                   help="record per-layer activation/gradient statistics every N batches into RUN/layer_stats.json")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also save resume state every N optimizer steps (default: at each epoch's end)")


def _add_lr_find(sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test: plot loss vs LR, suggest an LR",
                       parents=[_COMMON])
    p.add_argument("--data", required=True, help="data directory with the manifests")
    p.add_argument("--config", help="JSON file of config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--start-lr", type=float, default=1e-7, help="default 1e-7")
    p.add_argument("--end-lr", type=float, default=10.0, help="default 10")
    p.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    p.add_argument("--out", default="lr_find.png", help="plot file (default lr_find.png; a .json beside it)")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write RUN/report.html: results, curves, errors, data, config",
                       parents=[_COMMON])
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--data", help="data directory (default: the one the run was trained on)")


def _add_study(sub) -> None:
    p = sub.add_parser("study", help="controlled side-by-side experiments: init schemes or regularisers",
                       parents=[_COMMON])
    kinds = p.add_subparsers(dest="study_kind", required=True)
    for kind, flag, default, what in (
            ("init", "--schemes", "zeros,normal:1.0,xavier_uniform,he_normal,torch_default",
             "init schemes; normal:STD sets its std"),
            ("regularization", "--variants", "none,l2:1e-3,dropout:0.5,augment,early_stop",
             "none, l2[:λ], dropout[:p], augment, early_stop[:patience]; each adds one regulariser to none")):
        q = kinds.add_parser(kind, help=f"one run per {flag[2:-1]}, identical otherwise", parents=[_COMMON])
        q.add_argument("--data", required=True, help="data directory with the manifests")
        q.add_argument(flag, dest="variants", default=default, help=f"comma-separated {what} (default {default})")
        q.add_argument("--epochs", type=int, default=3, help="epochs per variant (default 3)")
        q.add_argument("--out", help=f"study folder (default runs/study-{kind})")
        q.add_argument("--threshold", type=float, default=0.8, help="valid accuracy whose first epoch is reported")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix a config key for all")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a run's checkpoint on a split", parents=[_COMMON])
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="default test")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="default best")
    p.add_argument("--data", help="data directory (default: the one the run was trained on)")


def _add_compare(sub) -> None:
    from .evaluation.compare import METRICS, SORT_KEYS  # no torch: a quick import

    p = sub.add_parser("compare", help="tabulate and plot runs side by side: differing config keys, metrics",
                       parents=[_COMMON])
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories, or folders searched (recursively) for runs")
    p.add_argument("--metric", default="valid_acc", choices=list(METRICS),
                   help="the headline metric column (default valid_acc: at the best epoch)")
    p.add_argument("--sort", choices=list(SORT_KEYS), help="sort rows by this, best first (default: --metric)")
    p.add_argument("--out", help="folder for compare.md and compare_valid.png (default: the folder given, "
                                 "else the runs' common parent)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict the class of new images with a run's checkpoint", parents=[_COMMON])
    p.add_argument("--run", required=True, help="run directory (nothing else is needed)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (every image below) or CSVs with a path column")
    p.add_argument("--out", help="write the predictions to this file (default: stdout)")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per image (default 3, at most all)")
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="default best")
    p.add_argument("--batch-size", type=int, default=256, help="images decoded and predicted at once (default 256)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's checkpoint as a standalone ONNX or TorchScript model",
                       parents=[_COMMON])
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="model file format")
    p.add_argument("--out", help="model file (default RUN/model.onnx or RUN/model.torchscript.pt; a .json beside it)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="default best")


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="hyperparameter search with Optuna: one run directory per trial",
                       parents=[_COMMON])
    p.add_argument("--data", required=True, help="data directory with the manifests")
    p.add_argument("--space", required=True, help="YAML file: config key -> {type: float|int|categorical, low, "
                                                  "high, log, step, choices}")
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="finished (complete + pruned) trials to reach; running the command again continues")
    p.add_argument("--out", help="study folder: trial-NNNN runs, study.db, compare.md "
                                 "(default runs/search-<space file name>)")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid"], help="default tpe")
    p.add_argument("--storage", help="Optuna database URL shared by the workers (default sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name in the storage (default: the --out folder's name)")
    p.add_argument("--jobs", type=int, default=1, metavar="K", help="worker processes (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key for every trial")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars; only warnings, errors and results")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_manifest(sub)
    _add_cache(sub)
    _add_validate(sub)
    _add_train(sub)
    _add_lr_find(sub)
    _add_evaluate(sub)
    _add_report(sub)
    _add_study(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_compare(sub)
    _add_search(sub)
    p = sub.add_parser("demo", help="the whole pipeline on scikit-learn's bundled digits", parents=[_COMMON])
    p.add_argument("--out", default="runs/demo", help="where to write data and runs (default runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (pytest and notebooks swap it), not the one at start."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _setup_logging(quiet: bool, verbose: bool) -> bool:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)  # the terminal's level; a run's train.log still gets INFO
    root = logging.getLogger("imgclf")
    root.handlers[:] = [handler]
    root.setLevel(min(level, logging.INFO))
    root.propagate = False
    return not quiet and sys.stderr.isatty()  # progress bars only on a terminal


def _run_config(run: str) -> dict | None:
    from pathlib import Path

    from .fileio import read_json

    path = Path(run) / "config.json"
    return read_json(path) if path.exists() else None


def _run(args: argparse.Namespace, progress: bool) -> int:
    from .config import load_config, parse_set

    if args.command == "manifest":
        from .data.manifest import make_manifests

        make_manifests(args.src, args.out, args.labels, args.pattern, args.split, args.test_src, args.seed,
                       args.dedupe)
    elif args.command == "cache":
        from .data.cache import build_cache

        info = build_cache(args.data, args.size, args.channels, args.resize, args.format, args.workers, progress)
        print(f"{'reused' if info.reused else 'built'} {info.path} ({info.reason})")
    elif args.command == "validate":
        from .data.validate import format_report, validate

        report = validate(args.data, args.workers, progress)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 2 if report["errors"] else 0
    elif args.command == "train":
        from .train.fit import fit

        overrides = parse_set(args.set)
        if args.no_cache:
            overrides["cache"] = False
        if args.checkpoint_every is not None:
            overrides["checkpoint_every"] = args.checkpoint_every
        if args.track_stats is not None:
            overrides["track_stats"] = args.track_stats
        base = _run_config(args.run) if args.resume else None
        cfg = load_config(args.config, overrides, base=base) if (base or args.config or overrides) else None
        summary = fit(args.data, args.run, cfg, overwrite=args.overwrite, progress=progress, resume=args.resume,
                      report=not args.no_report)
        print(f"best valid accuracy {summary['best_valid_acc']:.4f} at epoch {summary['best_epoch']}; "
              f"run in {summary['run_dir']}" + (f"; report: {summary['report']}" if "report" in summary else ""))
    elif args.command == "lr-find":
        from .train.lr_find import lr_find

        result = lr_find(args.data, load_config(args.config, parse_set(args.set)), args.start_lr, args.end_lr,
                         args.steps, args.out)
        print(f"suggested learning_rate {result['suggested_lr']:.2e}: {result['reason']}\nplot: {result['plot']}")
    elif args.command == "study":
        from .studies.study import parse_init_schemes, parse_reg_variants, run_study

        parse = parse_init_schemes if args.study_kind == "init" else parse_reg_variants
        summary = run_study(args.study_kind, args.data, parse(args.variants), args.out or f"runs/study-{args.study_kind}",
                            args.epochs, args.threshold, parse_set(args.set))
        print("\n".join(f"- {t}" for t in summary["readings"]))
    elif args.command == "report":
        from .evaluation.report import write_report

        print(write_report(args.run, args.data))
    elif args.command == "evaluate":
        from .evaluation.metrics import evaluate

        print(json.dumps(evaluate(args.run, args.split, args.checkpoint, args.data), indent=2))
    elif args.command == "compare":
        from .evaluation.compare import compare

        print(compare(args.runs, args.metric, args.sort, args.out)["table"])
    elif args.command == "search":
        from pathlib import Path

        from .studies.search import format_result, search

        out = args.out or f"runs/search-{Path(args.space).stem}"
        result = search(args.data, args.space, args.trials, out, args.sampler, args.storage, args.study, args.jobs,
                        parse_set(args.set), progress=progress)
        print(format_result(result))
    elif args.command == "predict":
        from .evaluation.predict import format_predictions, predict, write_predictions

        rows, skipped = predict(args.run, args.inputs, args.top_k, args.checkpoint, args.batch_size)
        for path, reason in skipped:
            print(f"imgclf: skipped {path}: {reason}", file=sys.stderr)
        if not rows:
            raise ImgclfError(f"no image could be predicted ({len(skipped)} input(s) skipped, see above)")
        text = format_predictions(rows, skipped, args.json)
        if args.out:
            write_predictions(text, args.out)
        else:
            sys.stdout.write(text)
    elif args.command == "export":
        from .evaluation.export import export, sidecar_path

        path = export(args.run, args.format, args.out, args.checkpoint)
        print(f"wrote {path} and {sidecar_path(path)}")
    elif args.command == "demo":
        from .demo import format_table, run_demo

        out = run_demo(args.out, parse_set(args.set), progress)
        print(f"\nimgclf demo: digits, best checkpoint of {out['run_dir']}\n")
        print(format_table(out["results"]))
        print(f"\nreport: {out['report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = _setup_logging(args.quiet, args.verbose)
    try:
        return _run(args, progress)
    except ImgclfError as e:
        from .train.trainer import TrainingInterrupted

        print(f"imgclf: {'' if isinstance(e, TrainingInterrupted) else 'error: '}{e}", file=sys.stderr)
        return 130 if isinstance(e, TrainingInterrupted) else 2
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `imgclf ... | head`: the reader left; that is not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
