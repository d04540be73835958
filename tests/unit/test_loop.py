"""The epoch loop: gradient accumulation equivalence, clipping, precision choice."""
import numpy as np
import pytest
import torch

from imgclf.config import Config
from imgclf.data.loader import ArraySource, BatchLoader
from imgclf.errors import ImgclfError
from imgclf.models import create_model, init_weights
from imgclf.train.loop import Position, Precision, Sums, ToDevice, resolve_precision, train_epoch
from imgclf.train.optim import create_optimizer
from imgclf.train.schedule import Schedule


def _train(batch_size, accumulate, optimizer="sgd", grad_clip=0.0):
    rng = np.random.default_rng(0)
    src = ArraySource(rng.integers(0, 256, (32, 6, 6, 1), dtype=np.uint8), rng.integers(0, 3, 32).astype(np.int64))
    cfg = Config(model="mlp", hidden_units=[16], batch_norm=False, dropout_rate=0.0, augment=False,
                 batch_size=batch_size, accumulate=accumulate, learning_rate=0.05, optimizer=optimizer,
                 grad_clip=grad_clip, image_size=6, channels=1)
    model = init_weights(create_model("mlp", 3, 1, 6, hidden_units=[16], batch_norm=False, dropout=0.0),
                         generator=torch.Generator().manual_seed(1))
    opt = create_optimizer(model, optimizer, cfg.learning_rate, 0.0)
    loader = BatchLoader(src, batch_size, seed=3)
    dev = torch.device("cpu")
    to_dev = ToDevice(dev, torch.tensor([0.5]), torch.tensor([0.25]))
    pos, sums = Position(), Sums.zeros(dev)
    steps = []
    train_epoch(model, loader, to_dev, cfg, opt, Schedule("constant", 1, 1), Precision(dev), torch.Generator(),
                pos, sums, lambda: steps.append(pos.batch), lambda n, loss: None)
    return model, steps, sums.result()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_accumulating_k_batches_of_b_matches_one_batch_of_kb(optimizer):
    big, big_steps, (big_loss, _) = _train(8, 1, optimizer)
    acc, acc_steps, (acc_loss, _) = _train(4, 2, optimizer)
    assert big_steps == [1, 2, 3, 4] and acc_steps == [2, 4, 6, 8]  # 4 optimizer steps either way
    for a, b in zip(big.parameters(), acc.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert acc_loss == pytest.approx(big_loss, rel=1e-6)
    plain, _, _ = _train(4, 1, optimizer)  # and it is not the same as not accumulating
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(big.parameters(), plain.parameters()))


def test_grad_clip_changes_the_update():
    free, _, _ = _train(8, 1, grad_clip=0.0)
    clipped, _, _ = _train(8, 1, grad_clip=1e-3)
    start, _, _ = _train(8, 1, grad_clip=1e-12)
    delta = lambda m: sum((a - b).abs().sum() for a, b in zip(m.parameters(), start.parameters()))
    assert delta(clipped) < delta(free)


@pytest.mark.parametrize("fast", [True, False])
def test_precision_choices(fast, monkeypatch):
    from imgclf.train import loop

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    monkeypatch.setattr(loop, "bf16_is_fast", lambda device: fast)
    assert resolve_precision("auto", cpu).dtype == (torch.bfloat16 if fast else None)
    with pytest.raises(ImgclfError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", cpu)
