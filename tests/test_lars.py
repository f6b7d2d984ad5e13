"""LARS (nas.optim.lars): two steps against a hand computation, the excluded group, the parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nas.optim import LARS, lars_param_groups


def test_lars_two_steps_match_the_hand_computation() -> None:
    w0 = [3.0, 4.0]
    g = [0.6, 0.8]
    lr, momentum, wd, eta = 0.5, 0.9, 0.1, 0.01
    weight = nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    bias = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = LARS(
        [
            {"params": [weight], "weight_decay": wd, "lars_adapt": True},
            {"params": [bias], "weight_decay": 0.0, "lars_adapt": False},
        ],
        lr=lr, momentum=momentum, eta=eta,
    )  # fmt: skip

    # by hand: local_lr = eta * |w| / (|g| + wd * |w|); update = lr * local_lr * (g + wd * w); buf = m * buf + update
    def norm(v: list[float]) -> float:
        return math.sqrt(sum(x * x for x in v))

    w, buf = list(w0), [0.0, 0.0]
    b, bbuf = [1.0, -2.0], [0.0, 0.0]
    for _ in range(2):
        weight.grad = torch.tensor([g], dtype=torch.float64)
        bias.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        local = eta * norm(w) / (norm(g) + wd * norm(w))
        buf = [momentum * bu + lr * local * (gi + wd * wi) for bu, gi, wi in zip(buf, g, w, strict=True)]
        w = [wi - bu for wi, bu in zip(w, buf, strict=True)]
        bbuf = [momentum * bu + lr * gi for bu, gi in zip(bbuf, g, strict=True)]  # excluded: no trust, no decay
        b = [bi - bu for bi, bu in zip(b, bbuf, strict=True)]
        assert weight.detach().flatten().tolist() == pytest.approx(w, rel=1e-12)
        assert bias.detach().tolist() == pytest.approx(b, rel=1e-12)
    assert w[0] == pytest.approx(3.0 - 0.015 - (0.9 * 0.015 + 0.5 * (0.04975 / 1.4975) * 0.8985), rel=1e-3)


def test_zero_weights_or_gradients_fall_back_to_plain_sgd_scaling() -> None:
    p = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([p], lr=0.1, momentum=0.0, eta=0.001)
    p.grad = torch.ones(2, 2)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((2, 2), -0.1))  # |w| = 0: trust ratio 1


def test_param_groups_exclude_batchnorm_and_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    adapted, excluded = lars_param_groups(model.parameters(), weight_decay=1e-6)
    assert {p.ndim for p in adapted["params"]} == {2, 4} and adapted["weight_decay"] == 1e-6 and adapted["lars_adapt"]
    assert {p.ndim for p in excluded["params"]} == {1} and excluded["weight_decay"] == 0.0
    assert not excluded["lars_adapt"]
    assert len(adapted["params"]) + len(excluded["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"lr": 0.1, "momentum": 1.0}, {"lr": 0.1, "eta": 0.0}])
def test_bad_hyper_parameters_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.zeros(1))], **kwargs)
