"""LARS: layer-wise adaptive rate scaling (You et al., 2017), in the form BossNAS trains with.

BossNAS's public code builds on OpenSelfSup, whose LARS computes for every adapted parameter ``w`` with gradient
``g``, weight decay ``wd``, trust coefficient ``eta``, learning rate ``lr`` and momentum ``m``::

    local_lr = eta * ||w|| / (||g|| + wd * ||w||)       (1 when ||w|| or ||g|| is 0)
    update   = lr * local_lr * (g + wd * w)
    buf      = m * buf + update
    w        = w - buf

Parameters of a group with ``lars_adapt=False`` (BatchNorm weights and biases in BossNAS: "lars_exclude") skip the
trust ratio (``local_lr = 1``); :func:`lars_param_groups` also gives them no weight decay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


def lars_param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights (ndim > 1: weight decay and trust ratio) and BatchNorm/bias vectors (neither)."""
    params = [p for p in params if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lars_adapt": True},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lars_adapt": False},
    ]


class LARS(Optimizer):
    """LARS with momentum (see the module docstring for the exact update).

    Per group: ``lr``, ``momentum``, ``weight_decay``, ``eta`` (trust coefficient) and ``lars_adapt``.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        lars_adapt: bool = True,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be non-negative, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        if eta <= 0.0:
            raise ValueError(f"eta must be positive, got {eta}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "lars_adapt": lars_adapt}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad: Tensor = p.grad
                if group["lars_adapt"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), eta * w_norm / (g_norm + wd * w_norm), torch.ones_like(w_norm)
                    )
                else:
                    trust = None
                update = grad.add(p, alpha=wd) if wd else grad.clone()
                update.mul_(lr)
                if trust is not None:
                    update.mul_(trust)
                state = self.state[p]
                if momentum:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = update
                    else:
                        buf.mul_(momentum).add_(update)
                    update = buf
                p.sub_(update)
        return loss
