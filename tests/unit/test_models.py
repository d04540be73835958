"""Contract test over every registered model: shapes, gradients, no NaN, every init scheme."""
import pytest
import torch

from imgclf.models import INIT_SCHEMES, create_model, init_weights, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_channels,size", [(1, 8), (3, 16), (3, 28)])
def test_forward_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, n_classes=5, in_channels=in_channels, image_size=size)
    init_weights(model, "xavier_uniform")
    x = torch.randn(4, in_channels, size, size)
    out = model(x)
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_every_init_runs(name, scheme):
    model = init_weights(create_model(name, 3, 3, 16), scheme, std=0.1)
    assert torch.isfinite(model(torch.randn(2, 3, 16, 16))).all()


def test_cnn_without_batch_norm_has_biases():
    model = create_model("cnn", 3, 3, 16, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
