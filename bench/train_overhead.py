"""Training-loop overhead (issue 4): imgclf's loop against a plain PyTorch loop and Lightning.

    .venv/bin/python bench/train_overhead.py              # SIGNS CNN at 64×64, 3 rounds × 4 epochs
    .venv/bin/python bench/train_overhead.py --quick      # 1 round × 2 epochs

All three train the same model (CS230's SIGNS CNN, xavier init, same seed) on the same uint8 data
already in memory, with Adam 1e-3, batch 32, fp32, no augmentation, and a full valid pass after
every epoch:
- a: a minimal hand-written loop (shuffle, normalise, forward, backward, step; then valid).
- b: imgclf's `fit` (its Trainer), which also writes metrics.csv, last/best checkpoints and the
     resume state every epoch, as it always does.
- c: a Lightning Trainer with a matching ModelCheckpoint (last + best by valid accuracy), a CSV
     logger, and no progress bar (imgclf shows none without a terminal either).
Each round runs a, b, c in turn (alternating, in one process), and each round starts one loop later
than the one before (a b c, b c a, c a b, ...), so no loop always runs first or right after another
one; use a multiple of 3 rounds. An epoch's time is the interval
between consecutive epoch ends, so start-up is excluded and the first epoch of each round is a
warm-up that is dropped. It prints the median epoch time of each and the ratios b/a and b/c.
Requires the bench extra (lightning): pip install -c constraints.txt -e '.[bench]'.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imgclf.config import Config
from imgclf.data.augment import normalize
from imgclf.data.cache import build_cache, open_packed
from imgclf.data.manifest import make_manifests
from imgclf.models import create_model, init_weights
from imgclf.train import fit as fit_mod
from imgclf.train.trainer import Trainer

SIGNS = Path(__file__).resolve().parents[2] / "shared" / "data" / "signs"
OUT = Path(__file__).resolve().parent / "out"
BATCH, LR, SEED = 32, 1e-3, 230


def data_dir(out: Path) -> Path:
    d = out / "signs"
    if not (d / "train.csv").exists():
        if not (SIGNS / "train").is_dir():
            sys.exit(f"{SIGNS} not found: this benchmark trains on SIGNS")
        make_manifests(SIGNS / "train", d, test_src=SIGNS / "test")
    return d


def arrays(d: Path):
    info = build_cache(d, 64, 3)
    (xt, yt), (xv, yv) = open_packed(info.path, "train"), open_packed(info.path, "valid")
    mean, std = torch.tensor(info.meta["mean"]), torch.tensor(info.meta["std"])
    return torch.from_numpy(np.array(xt)), torch.from_numpy(yt), torch.from_numpy(np.array(xv)), \
        torch.from_numpy(yv), mean, std


def make_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    m = create_model("cnn", 6, 3, 64)
    return init_weights(m, "xavier_uniform", generator=torch.Generator().manual_seed(SEED))


# --- a: the plain loop ------------------------------------------------------------------------

def plain(data, epochs: int) -> list[float]:
    xt, yt, xv, yv, mean, std = data
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    ends = [time.perf_counter()]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(normalize(xt[idx], mean, std)), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        correct = torch.zeros((), dtype=torch.int64)
        with torch.no_grad():
            for i in range(0, len(yv), 256):
                correct += (model(normalize(xv[i:i + 256], mean, std)).argmax(1) == yv[i:i + 256]).sum()
        correct.item()
        ends.append(time.perf_counter())
    return ends


# --- b: imgclf --------------------------------------------------------------------------------

def imgclf_fit(d: Path, epochs: int) -> list[float]:
    ends = [time.perf_counter()]
    original = Trainer._end_epoch

    def timed(self):
        original(self)
        ends.append(time.perf_counter())

    cfg = Config(num_epochs=epochs, augment=False, batch_size=BATCH, learning_rate=LR, weight_decay=0.0,
                 seed=SEED, precision="fp32", channels_last=False)  # as a and c: the loop is compared, not bf16
    Trainer._end_epoch = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t_start = time.perf_counter()
            fit_mod.fit(d, Path(tmp) / "run", cfg)
    finally:
        Trainer._end_epoch = original
    ends[0] = t_start
    return ends


# --- c: Lightning -----------------------------------------------------------------------------

def lightning_fit(data, epochs: int) -> list[float]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    xt, yt, xv, yv, mean, std = data

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = make_model()

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self.model(normalize(x, mean, std)), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("valid_acc", (self.model(normalize(x, mean, std)).argmax(1) == y).float().mean(),
                     on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    ends = [time.perf_counter()]

    class Stamp(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False,
                            enable_model_summary=False, logger=CSVLogger(tmp), num_sanity_val_steps=0,
                            callbacks=[ModelCheckpoint(tmp, monitor="valid_acc", mode="max", save_last=True),
                                       Stamp()], deterministic=False)
        train = DataLoader(TensorDataset(xt, yt), batch_size=BATCH, shuffle=True,
                           generator=torch.Generator().manual_seed(SEED))
        valid = DataLoader(TensorDataset(xv, yv), batch_size=256)
        ends[0] = time.perf_counter()
        trainer.fit(Module(), train, valid)
    return ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 epochs")
    ap.add_argument("--rounds", type=int, default=3, help="a multiple of 3 puts each loop in each position equally")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is a warm-up")
    args = ap.parse_args()
    rounds, epochs = (1, 2) if args.quick else (args.rounds, args.epochs)
    logging.getLogger("imgclf").setLevel(logging.WARNING)
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    d = data_dir(OUT)
    data = arrays(d)
    times: dict[str, list[float]] = {"a plain": [], "b imgclf": [], "c lightning": []}
    loops = [("a plain", lambda: plain(data, epochs)), ("b imgclf", lambda: imgclf_fit(d, epochs)),
             ("c lightning", lambda: lightning_fit(data, epochs))]
    for r in range(rounds):
        for name, run in loops[r % 3:] + loops[:r % 3]:  # rotated: each loop takes each position in turn
            ends = run()
            epoch_times = np.diff(ends)[1:]  # the first epoch is a warm-up
            times[name] += epoch_times.tolist()
            print(f"round {r + 1} {name}: " + ", ".join(f"{t:.3f}" for t in epoch_times) + " s/epoch",
                  file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; SIGNS train {len(data[1])} / valid "
          f"{len(data[3])} images at 64×64, batch {BATCH}, fp32; {rounds} rounds × {epochs} epochs (first dropped), "
          f"order rotated each round\n")
    print("| loop | median s/epoch | epochs timed |")
    print("|---|--:|--:|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.3f} | {len(v)} |")
    print(f"\nb/a = {med['b imgclf'] / med['a plain']:.3f}   (goal ≤ 1.03)")
    print(f"b/c = {med['b imgclf'] / med['c lightning']:.3f}   (goal < 1)")


if __name__ == "__main__":
    main()
