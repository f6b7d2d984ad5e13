"""nas.train's optimizer and schedule options: Nesterov or plain momentum, and the cosine floor ``lr_min``."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
from torch import nn

from nas.spec import TrainSpec
from nas.train import make_optimizer, make_scheduler


def lrs(cfg: TrainSpec, steps_per_epoch: int = 5) -> list[float]:
    opt = make_optimizer(nn.Linear(2, 2).parameters(), cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])
    return out


def test_default_is_nesterov_and_cosine_to_zero() -> None:
    cfg = TrainSpec(epochs=2, lr=0.1)
    assert cfg.nesterov and cfg.lr_min == 0.0
    opt = make_optimizer(nn.Linear(2, 2).parameters(), cfg)
    assert all(g["nesterov"] for g in opt.param_groups)
    got = lrs(cfg)
    assert got[0] == pytest.approx(0.1) and got[-1] == pytest.approx(0.0, abs=1e-12)


def test_plain_momentum_and_no_momentum() -> None:
    opt = make_optimizer(nn.Linear(2, 2).parameters(), TrainSpec(nesterov=False))
    assert all(not g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    opt = make_optimizer(nn.Linear(2, 2).parameters(), TrainSpec(momentum=0.0))
    assert all(not g["nesterov"] for g in opt.param_groups)  # Nesterov needs momentum


def test_cosine_floor_with_warmup() -> None:
    cfg = TrainSpec(epochs=4, lr=0.2, lr_min=0.02, warmup_epochs=1)
    got = lrs(cfg)
    warm, rest = got[:5], got[5:]
    assert warm == pytest.approx([0.2 * (i + 1) / 5 for i in range(5)])
    assert rest[0] == pytest.approx(0.2) and rest[-1] == pytest.approx(0.02)
    mid = len(rest) // 2  # halfway through the decay: the mean of lr and lr_min
    progress = mid / (len(rest) - 1)
    assert rest[mid] == pytest.approx(0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert rest == sorted(rest, reverse=True)


def test_floor_above_lr_is_rejected() -> None:
    with pytest.raises(ValidationError, match="lr_min"):
        TrainSpec(lr=0.01, lr_min=0.1)
    with pytest.raises(ValidationError):
        TrainSpec(lr_min=-1.0)
