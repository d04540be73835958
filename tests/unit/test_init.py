import math

import pytest
import torch
import torch.nn as nn

from imgclf.models import INIT_SCHEMES, init_weights


def _layer():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1024, 512), nn.Conv2d(64, 128, 3))


def _std_bound(w):
    return w.std().item(), w.abs().max().item()


@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal"])
def test_scheme_matches_formula(scheme):
    model = init_weights(_layer(), scheme, generator=torch.Generator().manual_seed(0))
    for m in model:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        std, bound = _std_bound(m.weight.detach())
        if scheme == "xavier_uniform":
            a = math.sqrt(6 / (fan_in + fan_out))
            assert bound <= a and bound > 0.99 * a
            assert std == pytest.approx(a / math.sqrt(3), rel=0.03)
        elif scheme == "he_uniform":
            a = math.sqrt(6 / fan_in)
            assert bound <= a and bound > 0.99 * a
            assert std == pytest.approx(a / math.sqrt(3), rel=0.03)
        elif scheme == "xavier_normal":
            assert std == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.03)
        else:
            assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
        assert m.weight.mean().abs().item() < 0.05 * std
        assert torch.count_nonzero(m.bias) == 0


def test_normal_uses_std():
    model = init_weights(_layer(), "normal", std=1.0)
    assert model[0].weight.std().item() == pytest.approx(1.0, rel=0.03)


def test_zeros():
    model = init_weights(_layer(), "zeros")
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())


def test_torch_default_keeps_torch_init():
    a = init_weights(_layer(), "torch_default", generator=None)
    bound = 1 / math.sqrt(1024)  # kaiming_uniform(a=√5) on a Linear gives U(±1/√fan_in)
    assert a[0].weight.abs().max().item() <= bound
    assert torch.count_nonzero(a[0].bias) > 0  # torch's own bias init is kept


def test_every_scheme_is_deterministic_under_a_generator():
    for scheme in INIT_SCHEMES:
        a = init_weights(_layer(), scheme, std=0.5, generator=torch.Generator().manual_seed(7))
        b = init_weights(_layer(), scheme, std=0.5, generator=torch.Generator().manual_seed(7))
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_batch_norm_starts_as_identity():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    init_weights(model)
    assert torch.all(model[1].weight == 1) and torch.all(model[1].bias == 0)


def test_unknown_scheme_is_a_clear_error():
    from imgclf.errors import ImgclfError

    with pytest.raises(ImgclfError, match="xavier_uniform"):
        init_weights(_layer(), "glorot")
