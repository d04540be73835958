"""Each schedule's LR curve against torch's own scheduler."""
import pytest
import torch

from imgclf.train.schedule import Schedule

BASE = 0.1
SPE, EPOCHS = 7, 12
TOTAL = SPE * EPOCHS


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)


def _torch_curve(make, n=TOTAL):
    opt = _opt()
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _ours(**kw):
    s = Schedule(steps_per_epoch=SPE, total_steps=TOTAL, **kw)
    return [BASE * s.factor(i) for i in range(TOTAL)]


def test_constant():
    assert _ours(name="constant") == [BASE] * TOTAL


def test_step():
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4 * SPE, gamma=0.5))
    assert _ours(name="step", step_size=4, gamma=0.5) == pytest.approx(ref, rel=1e-12)


def test_cosine_with_floor():
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL, eta_min=0.01))
    assert _ours(name="cosine", min_factor=0.1) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_onecycle():
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=BASE, total_steps=TOTAL))
    assert _ours(name="onecycle") == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_linear_warmup_then_cosine():
    w = 2 * SPE
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / w, end_factor=1.0, total_iters=w - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL - w)], milestones=[w]))
    assert _ours(name="cosine", warmup_steps=w) == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_plateau(mode):
    metrics = [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.61, 0.61, 0.61, 0.61, 0.61, 0.7]
    if mode == "min":
        metrics = [1 - m for m in metrics]
    opt = _opt()
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=2, min_lr=0.02)
    ours = Schedule("plateau", SPE, TOTAL, gamma=0.5, patience=2, min_factor=0.2, mode=mode)
    for m in metrics:
        ref.step(m)
        ours.end_epoch(m)
        assert BASE * ours.factor(0) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert ours.scale < 1  # the test exercised at least one reduction


def test_plateau_state_round_trip():
    a = Schedule("plateau", SPE, TOTAL, patience=0)
    for m in (0.5, 0.4):
        a.end_epoch(m)
    b = Schedule("plateau", SPE, TOTAL, patience=0)
    b.load_state_dict(a.state_dict())
    assert b.factor(3) == a.factor(3) and b.best == a.best
