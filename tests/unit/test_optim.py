import pytest
import torch

from imgclf.models import create_model
from imgclf.train.optim import create_optimizer, param_groups


def test_only_conv_and_linear_weights_decay():
    model = create_model("cnn", n_classes=6, in_channels=3, image_size=16, num_channels=4, fc_units=8)
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    named = dict(model.named_parameters())
    decayed = {n for n, p in named.items() if any(p is q for q in decay["params"])}
    assert decayed == {n for n in named if n.endswith("weight") and named[n].ndim >= 2}
    assert all(p.ndim < 2 for p in no_decay["params"])  # biases and batch-norm scales/shifts
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    assert any(n.endswith("bias") for n in named) and any(named[n].ndim == 1 and "weight" in n for n in named)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_l2_acts_only_on_weights(name):
    """With zero gradients from the loss, only decayed tensors move."""
    model = create_model("mlp", n_classes=3, in_channels=1, image_size=4, hidden_units=[8], batch_norm=True)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    opt = create_optimizer(model, name, learning_rate=0.1, weight_decay=0.5)
    before = {n: p.clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(before[n], p)
        assert moved == (p.ndim >= 2), n
