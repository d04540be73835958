"""Raw SIGNS JPEGs to a test number (issue 4): the course's recipe against imgclf's defaults.

    .venv/bin/python bench/end_to_end.py              # 10 epochs each, 1 repeat
    .venv/bin/python bench/end_to_end.py --epochs 2   # a smoke check

Both start from the raw JPEGs and the same train/valid/test split (imgclf's manifest of
../shared/data/signs, written once up front), run the same number of epochs, pick the epoch with
the best valid accuracy, and report test accuracy for it. Each runs in fresh processes, so
start-up (imports) counts, and imgclf's cache is built from scratch inside its time.
- a: the course's recipe (CS230 pytorch/vision): a Dataset reading the CSV that opens, resizes
     (64, bilinear) and converts each JPEG with PIL in __getitem__, random horizontal flip for
     training, a DataLoader with num_workers = the core count, the CS230 network (3 × conv-BN-ReLU-
     pool, FC-BN-ReLU-dropout 0.8-FC, PyTorch's default init), Adam 1e-3, batch 32, fp32.
- b: `imgclf manifest` + `imgclf train` + `imgclf evaluate`, all with imgclf's defaults (which on
     a CPU with fast bf16 means bf16 autocast and channels_last).
It prints both wall times, both test accuracies, and b/a.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGNS = Path(__file__).resolve().parents[2] / "shared" / "data" / "signs"


def course(data_dir: str, epochs: int) -> dict:
    """The course's recipe, in this (fresh) process."""
    import csv

    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from imgclf.models import create_model

    class SignsDataset(Dataset):
        def __init__(self, csv_path: Path, train: bool):
            rows = list(csv.DictReader(open(csv_path, newline="")))
            self.paths = [str((csv_path.parent / r["path"]).resolve()) for r in rows]
            self.labels = [int(r["label"]) for r in rows]
            self.train = train

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            im = Image.open(self.paths[i]).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
            if self.train and np.random.rand() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)  # ToTensor
            return x, self.labels[i]

    torch.manual_seed(230)
    d = Path(data_dir)
    workers = os.cpu_count() or 1
    loaders = {s: DataLoader(SignsDataset(d / f"{s}.csv", s == "train"), batch_size=32, shuffle=s == "train",
                             num_workers=workers) for s in ("train", "valid", "test")}
    model = create_model("cnn", 6, 3, 64, dropout=0.8, batch_norm=True)  # CS230's net, torch's default init
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def accuracy(split: str) -> float:
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in loaders[split]:
                correct += (model(x).argmax(1) == y).sum().item()
                n += len(y)
        return correct / n

    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for x, y in loaders["train"]:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = accuracy("valid")
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"valid": best, "test": accuracy("test")}


def run_course(data_dir: Path, epochs: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--course-only", str(data_dir), "--epochs", str(epochs)],
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout.strip().splitlines()[-1])


def run_imgclf(tmp: Path, epochs: int) -> tuple[float, dict]:
    imgclf = [sys.executable, "-m", "imgclf", "-q"]
    data, run = tmp / "imgclf-data", tmp / "imgclf-run"
    t0 = time.perf_counter()
    subprocess.run([*imgclf, "manifest", str(SIGNS / "train"), "--test", str(SIGNS / "test"), "--out", str(data)],
                   check=True, capture_output=True)
    subprocess.run([*imgclf, "train", "--data", str(data), "--run", str(run), "--set", f"num_epochs={epochs}"],
                   check=True, capture_output=True)
    out = subprocess.run([*imgclf, "evaluate", "--run", str(run), "--split", "test"], check=True,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    best = json.loads((run / "best.json").read_text())
    return wall, {"valid": best["metrics"]["valid_acc"], "test": json.loads(out.stdout)["accuracy"],
                  "precision": best["config"]["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--course-only", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.course_only:
        print(json.dumps(course(args.course_only, args.epochs)))
        return
    if not (SIGNS / "train").is_dir():
        sys.exit(f"{SIGNS} not found: this benchmark runs on SIGNS")
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cores; SIGNS raw JPEGs → test accuracy, "
          f"{args.epochs} epochs each\n")
    print("| run | a course: wall s | a test acc | b imgclf: wall s | b test acc | b/a |")
    print("|---|--:|--:|--:|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        from imgclf.data.manifest import make_manifests

        make_manifests(SIGNS / "train", tmp / "course-data", test_src=SIGNS / "test")  # the same split as b's
        for r in range(args.repeats):
            ta, ra = run_course(tmp / "course-data", args.epochs)
            tb, rb = run_imgclf(tmp / f"r{r}", args.epochs)
            print(f"| {r + 1} | {ta:.1f} | {ra['test']:.4f} | {tb:.1f} | {rb['test']:.4f} | {tb / ta:.2f} |")
    print(f"\n(b's best-checkpoint valid accuracy {rb['valid']:.4f}, course's {ra['valid']:.4f}; "
          "goal: b/a ≤ 0.33 with a test accuracy at least as high)")


if __name__ == "__main__":
    main()
